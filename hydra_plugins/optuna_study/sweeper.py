"""The Hydra Sweeper behind `sweep=optuna`: an Optuna study kept in a database.

Hydra finds sweepers only inside the `hydra_plugins` namespace package, so the class lives here
and hands the work to src/sweep/study.py. Hydra imports this module at every start, so it imports
nothing heavy (Optuna loads when a sweep begins). Its config, with every default and its
meaning, is OptunaSweeperConfig in src/config/sweeper.py (`hydra/sweeper=optuna_study`).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaStudySweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # the sweeper's config, sampler and pruner still as configs

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.sweep_dir = str(config.hydra.sweep.dir)
        mode = OmegaConf.select(config, "runner.monitor_mode")
        self.monitor_mode = str(getattr(mode, "value", mode))
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.launcher = launcher

    def sweep(self, arguments: list[str]) -> Any:
        from src.sweep.study import StudySettings, StudySweep

        plain: dict[str, Any] = {
            key: (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
            for key, value in self.settings.items()
        }
        settings = StudySettings(
            **{
                **plain,
                "direction": plain.get("direction") or self.monitor_mode,
                "params": plain.get("params") or {},
            }
        )
        assert self.launcher is not None
        StudySweep(settings, self.launcher, self.sweep_dir).run(arguments)
