"""Opening a file runs nothing: crafted checkpoints and run folders name targets the project does
not ship (nested `_target_` chains, a yaml outside src/config), and are refused in one line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from helpers import REPO, tiny_overrides
from src.config.trust import UntrustedConfig, check_untrusted_config, shipped_targets
from src.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from src.training.resume import replayable


def snapshot(*folders: Path) -> dict[str, str]:
    """path -> sha256 of every file below the folders (caches aside)."""
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if "__pycache__" not in p.parts
    }


def chain(marker: Path) -> dict:
    """`pathlib.Path.touch(pathlib.Path(marker))`: two ordinary library calls, chained."""
    return {
        "_target_": "pathlib.Path.touch",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}],
    }


def test_a_crafted_checkpoint_with_a_target_chain_runs_nothing(
    cli, finished_run: Path, data_root: Path, tmp_path: Path
) -> None:
    marker = tmp_path.parent / f"{tmp_path.name}-pwned"  # outside the test's folder
    payload = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    nested = tmp_path / "nested.pt"
    payload["config"]["model"]["hidden"] = chain(marker)
    save_checkpoint(nested, {k: v for k, v in payload.items() if k != "format_version"})
    replaced = tmp_path / "replaced.pt"
    payload["config"]["model"]["hidden"] = 256
    payload["config"]["task"] = chain(marker)
    save_checkpoint(replaced, {k: v for k, v in payload.items() if k != "format_version"})
    image = tmp_path / "images" / "digit.png"
    image.parent.mkdir()
    Image.new("L", (28, 28)).save(image)
    watched = (REPO / "src", finished_run, data_root)
    before, ours = snapshot(*watched), snapshot(tmp_path)

    runs = [
        (cli(f"ckpt={nested}", module="src.eval"), "model.hidden._target_=pathlib.Path.touch"),
        (cli(f"ckpt={replaced}", f"input={image}", module="src.predict"), "task._target_=pathl"),
    ]
    for result, key in runs:
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert key in lines[0] and "is not a target this project ships" in lines[0]
    assert not marker.exists()
    assert snapshot(*watched) == before and snapshot(tmp_path) == ours  # nothing written at all


def test_resume_refuses_to_replay_overrides_that_could_run_code(
    cli, finished_run: Path, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    marker = tmp_path.parent / f"{tmp_path.name}-pwned"
    evil = tmp_path / "evil.yaml"  # a "model option" outside src/config, reached by ../
    evil.write_text(yaml.safe_dump(chain(marker)))
    escape = "../" * len((REPO / "src" / "config" / "model").parts) + str(evil.with_suffix(""))[1:]
    saved = run_dir / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(saved.read_text())
    for bad in (f"model={escape}", "+model.extra={_target_: os.getcwd}"):
        saved.write_text(yaml.safe_dump([*original, bad]))
        before = snapshot(run_dir)
        result = cli(*tiny_overrides(data_root, run_dir)[:-1], f"resume={run_dir}")
        assert result.returncode == 2, result.stdout + result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "refusing to replay" in line and bad.split("=")[0] in line
        assert snapshot(run_dir) == before
    assert not marker.exists()


def test_configs_the_project_writes_pass_and_others_name_the_key(finished_run: Path) -> None:
    config = load_checkpoint(finished_run / "checkpoints" / "last.pt")["config"]
    check_untrusted_config(config, "last.pt")  # what the project writes itself passes
    assert "src.model.cnn.CNN" in shipped_targets()["model"]
    for key, value, expected in [
        ("model", {**config["model"], "_target_": "os.system"}, "model._target_=os.system"),
        ("task", {**config["task"], "x": [chain(Path("m"))]}, "task.x.0._target_"),
        ("data", {**config["data"], "root": "${oc.env:HOME}"}, "data.root holds an interp"),
    ]:
        with pytest.raises(UntrustedConfig, match=expected.replace("$", r"\$")):
            check_untrusted_config({**config, key: value}, "x.pt")
    assert isinstance(torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True), dict)


def test_replayed_overrides_keep_plain_values_and_project_options_only() -> None:
    config_dir = REPO / "src" / "config"
    saved = ["model=mlp", "seed=3", "data.root=../data", "~scheduler", "hydra.verbose=true"]
    saved += ["allow_resume_changes=true"]  # a permission is given at each resume, never replayed
    assert replayable(saved, Path("run"), config_dir) == saved[:4]
    for bad in (
        "model=../../../tmp/evil",
        "+../../tmp=evil",
        "model._target_=os.system",
        "+data.x={_target_: os.getcwd}",
        "data.root=${oc.env:HOME}",
    ):
        with pytest.raises(CheckpointError, match="refusing to replay"):
            replayable([bad], Path("run"), config_dir)
