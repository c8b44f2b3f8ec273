"""Which `_target_`s a config read from a file may name: the ones this project ships.

A checkpoint carries the resolved config it was trained with, so that `src.eval` and
`src.predict` can rebuild the model from the file alone. Instantiating that config as it is would
let a `.pt` file from someone else call any importable function (Hydra resolves `_target_`s, and
nested ones chain), which is exactly what `torch.load(weights_only=True)` promises cannot happen.
So a config read from a file may name a `_target_` only at a place where the project's own config
tree (`src/config/**/*.yaml` and the schemas in `schema.py`) has one, and only a target the tree
names there: `model._target_=src.model.cnn.CNN` passes, `model.hidden._target_=...` does not.
Interpolations (`${...}`) are refused too: resolvers run when a config is read.

Your own yaml files and command line are trusted: they are code you run (docs/reliability.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from src.common.errors import UserError
from src.config.schema import LIST_GROUPS, SCHEMAS

CONFIG_DIR = Path(__file__).resolve().parent
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)


class UntrustedConfig(UserError):
    """A config read from a file names something this project does not ship."""


def shipped_targets() -> dict[str, frozenset[str]]:
    """Config location (e.g. `model`, `data`) -> the `_target_`s the project puts there."""
    return dict(_shipped_targets())


@cache
def _shipped_targets() -> tuple[tuple[str, frozenset[str]], ...]:
    found: dict[str, set[str]] = {}
    for location, target in [*_schema_targets(), *_yaml_targets()]:
        found.setdefault(location, set()).add(target)
    return tuple((k, frozenset(v)) for k, v in sorted(found.items()))


def _schema_targets() -> Iterator[tuple[str, str]]:
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            location = f"{group}.{name}" if group in LIST_GROUPS else group
            yield from _targets_in(OmegaConf.to_container(OmegaConf.structured(schema)), location)


def _yaml_targets() -> Iterator[tuple[str, str]]:
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        text = path.read_text()
        header = _PACKAGE.search(text)
        group = path.relative_to(CONFIG_DIR).parent.as_posix().replace("/", ".")
        package = header.group(1) if header else ("" if group == "." else group)
        node = yaml.safe_load(text) or {}
        node.pop("defaults", None)
        yield from _targets_in(node, "" if package == "_global_" else package)


def _targets_in(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield prefix, str(value)
            else:
                yield from _targets_in(value, _join(prefix, key))


def check_untrusted_config(config: Any, source: str) -> None:
    """Raise UntrustedConfig, naming the key, unless every `_target_` in `config` is one the
    project ships at that place and no value is an interpolation."""
    if not isinstance(config, dict):
        raise UntrustedConfig(f"refusing {source}: its config is not a mapping")
    allowed = {tuple(k.split(".")) if k else (): v for k, v in shipped_targets().items()}
    for path, value in _leaves(config, ()):
        key = ".".join(str(part) for part in path)
        if path[-1] == "_target_":
            if str(value) not in allowed.get(path[:-1], ()):
                raise UntrustedConfig(
                    f"refusing {source}: {key}={value} is not a target this project ships there "
                    "(a checkpoint or run folder may only name the project's own classes)"
                )
        elif isinstance(value, str) and "${" in value:
            raise UntrustedConfig(
                f"refusing {source}: {key} holds an interpolation ({value[:60]}), "
                "which a saved config never does"
            )


def _leaves(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, value) of every leaf; a dict or list under `_target_` is a leaf too."""
    if isinstance(node, dict) and not (path and path[-1] == "_target_"):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and not (path and path[-1] == "_target_"):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path, node


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


if __name__ == "__main__":
    for location, targets in shipped_targets().items():
        print(f"{location or '<root>'}: {', '.join(sorted(targets))}")
    try:
        check_untrusted_config({"model": {"_target_": "os.system"}}, "demo.pt")
    except UntrustedConfig as err:
        print(err)
