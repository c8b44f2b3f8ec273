"""The house rules of docs/architecture.md, checked: imports, sizes, READMEs, one place for
each default."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_method

from src.config import schema
from src.training.options import RunnerOptions

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 50


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_import_rules_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_import_rules(tmp_path: Path) -> None:
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    runner = tmp_path / "src" / "runner.py"
    runner.write_text(
        runner.read_text().replace("import torch\n", "import omegaconf\nimport torch\n", 1)
    )
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "src.runner -> omegaconf" in result.stdout


def python_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_files_and_functions_stay_short() -> None:
    too_long = []
    for path in python_files():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}::{node.name}: {length} lines")
    assert not too_long, too_long


def test_every_folder_of_src_has_a_readme() -> None:
    folders = [p for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert [p.name for p in folders if not (p / "README.md").is_file()] == []


def option_yamls() -> list[tuple[str, Path, type]]:
    """(group, yaml, schema) for every option that extends a schema of its own group."""
    found = []
    for group, options in schema.SCHEMAS.items():
        for name, node in options.items():
            path = SRC / "config" / group / f"{name}.yaml"
            if path.is_file():
                found.append((group, path, node))
    return found


@pytest.mark.parametrize(("group", "path", "node"), option_yamls(), ids=lambda v: str(v)[-30:])
def test_an_option_yaml_sets_no_default_of_its_schema(group: str, path: Path, node: type) -> None:
    content = yaml.safe_load(path.read_text()) or {}
    own = content.get(group, {}) if "_global_" in path.read_text().split("\n", 1)[0] else content
    fields = {f.name for f in dataclasses.fields(node)}
    repeated = sorted(set(own or {}) & fields)
    assert not repeated, f"{path.name} sets {repeated}: the default lives in {node.__name__}"


def test_the_runner_options_are_defined_once() -> None:
    assert issubclass(schema.RunnerConfig, RunnerOptions)
    own = inspect.get_annotations(schema.RunnerConfig)
    assert set(own).isdisjoint(f.name for f in dataclasses.fields(RunnerOptions))


def constructor_pairs() -> list[tuple[str, str, object, object]]:
    """(schema, field, schema default, constructor default) for our own targets."""
    pairs = []
    for options in schema.SCHEMAS.values():
        for node in options.values():
            defaults = {f.name: _default(f) for f in dataclasses.fields(node)}
            target = defaults.get("_target_")
            if not isinstance(target, str) or not target.startswith("src."):
                continue
            signature = inspect.signature(get_method(target))
            for name, parameter in signature.parameters.items():
                value = defaults.get(name)
                if parameter.default is inspect.Parameter.empty or value is None:
                    continue
                pairs.append((node.__name__, name, value, parameter.default))
    return pairs


def _default(field: dataclasses.Field) -> object:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _plain(value: object) -> object:
    value = getattr(value, "value", value)  # Enum members compare by their value
    return list(value) if isinstance(value, tuple) else value


def test_schema_defaults_agree_with_the_code_they_configure() -> None:
    pairs = constructor_pairs()
    assert len(pairs) > 10  # the check sees the models, tasks and data functions
    differing = [p for p in pairs if _plain(p[2]) != _plain(p[3])]
    assert not differing, differing


@pytest.mark.parametrize("literal", ["0.1307", "0.3081", "0.2860", "0.3530"])
def test_each_dataset_statistic_is_written_once(literal: str) -> None:
    pattern = re.compile(rf"(?<![\d.]){re.escape(literal)}(?!\d)")
    places = [
        str(p.relative_to(REPO))
        for p in [*python_files(), *(SRC / "config").rglob("*.yaml")]
        if pattern.search(p.read_text())
    ]
    assert len(places) == 1, places
