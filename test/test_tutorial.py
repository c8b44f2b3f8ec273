"""docs/tutorial.md does what it says: its files are written into a copy of the repository and
its commands run there, on synthetic data with short budgets, in one Python process."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, write_mnist_like

TUTORIAL = REPO / "docs" / "tutorial.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
SHORT = [  # appended to every training command: synthetic data, a few steps
    "data.download=false",
    "data.verify_md5=false",
    "data.val_size=100",
    "data.batch_size=50",
    "data.eval_batch_size=100",
    "device=cpu",
    "runner.progress=none",
]
DRIVER = """
import contextlib, io, itertools, json, runpy, sys
from pathlib import Path
from hydra import compose, initialize_config_module
import src.main as entry  # registers the schemas and the run_stamp resolver

jobs, out = json.loads(Path(sys.argv[1]).read_text()), []
for job in jobs:
    if job["kind"] == "module":
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            runpy.run_module(job["name"], run_name="__main__")
        out.append({"printed": printed.getvalue()})
        continue
    swept = [[f"{k}={v}" for v in vs.split(",")] for k, vs in
             (a.split("=", 1) for a in job["args"] if "," in a)]
    fixed = [a for a in job["args"] if "," not in a]
    results = []
    for i, combo in enumerate(itertools.product(*swept) if swept else [()]):
        with initialize_config_module("src.config", version_base="1.3"):
            cfg = compose("config", overrides=[*fixed, *combo])
        run_dir = Path(job["run_dir"]) / str(i)
        results.append(entry.train(cfg, run_dir))
    out.append({"results": results})
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(TUTORIAL.read_text())


def files() -> dict[str, str]:
    """Code blocks that name their file in one of their first two lines: `# src/model/x.py`."""
    named = {}
    for _, body in blocks():
        for line in body.splitlines()[:2]:
            if re.fullmatch(r"# src/\S+\.(py|yaml)", line):
                named[line[2:]] = body
    return named


def commands() -> list[tuple[str, str, str]]:
    """(kind, what, comment) for every runnable command in the bash blocks."""
    found = []
    for language, body in blocks():
        if language != "bash":
            continue
        for line in body.splitlines():
            command, _, comment = line.partition("#")
            command = command.strip()
            if "<" in command or "2026-" in command:  # placeholders stand for the reader's own
                continue
            if command.startswith("make run"):
                args = re.search(r'ARGS="([^"]*)"', command)
                found.append(("run", args.group(1) if args else "", comment.strip()))
            elif command.startswith(".venv/bin/python -m src.main --multirun"):
                found.append(("run", command.split("--multirun", 1)[1].strip(), comment))
            elif command.startswith(".venv/bin/python -m "):
                found.append(("module", command.split(" -m ", 1)[1].strip(), comment.strip()))
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[tuple[str, str, str], dict]]:
    root = tmp_path_factory.mktemp("tutorial")
    repo = root / "repo"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    for name in tracked.stdout.split():
        if name.startswith(("src/", "pyproject.toml")) and (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, repo / name)
    for name, body in files().items():
        (repo / name).write_text(body)
    data = root / "data"
    write_mnist_like(data)
    write_mnist_like(data, "FashionMNIST")
    jobs = []
    for i, (kind, what, _) in enumerate(commands()):
        if kind == "module":
            jobs.append({"kind": kind, "name": what})
            continue
        budget = [] if "debug=" in what else ["runner.max_steps=3"]
        args = [*what.split(), f"data.root={data}", *SHORT, *budget]
        jobs.append({"kind": kind, "args": args, "run_dir": str(root / f"run{i}")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (repo / "driver.py").write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, "driver.py", str(root / "jobs.json"), str(root / "out.json")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "HOME": str(root)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return list(zip(commands(), json.loads((root / "out.json").read_text())))


def test_the_tutorial_names_the_files_it_asks_for() -> None:
    assert set(files()) == {
        "src/model/bn_cnn.py",
        "src/config/model/bn_cnn.yaml",
        "src/task/focal.py",
        "src/config/task/focal.yaml",
    }


def test_every_tutorial_command_runs_and_does_what_its_comment_says(ran) -> None:
    seen = set()
    for (kind, what, comment), out in ran:
        if kind == "module":
            claim = comment.split("shape check:")[-1].strip()
            assert claim in out["printed"], (what, out)
            continue
        for results in out["results"]:
            assert results["status"] == "completed", (what, results)
        if "debug=overfit" in what:
            assert out["results"][0]["overfit/loss"] < 0.05
        if "task=focal" in what:
            assert 0.0 <= out["results"][0]["test/balanced_acc"] <= 1.0
            assert "best/val/balanced_acc" in out["results"][0]
        seen.add(what.split()[0] if what else "default")
    assert {"default", "debug=fast", "model=bn_cnn", "task=focal", "data=fashion_mnist"} <= seen
    assert {"experiment=denoising_autoencoder", "model=cnn,bn_cnn"} <= seen
