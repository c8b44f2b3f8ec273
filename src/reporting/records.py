"""What a run needs to be reproduced months later, written into its run directory.

    environment.json   python, torch, torchvision, CUDA, cuDNN, device name, host, command line
    git.txt            commit, branch, untracked files (or why there is no git information)
    git.diff           uncommitted changes to tracked files (`git diff HEAD`; empty when clean)
    requirements.txt   every installed distribution as name==version (what `pip freeze` lists)

Hydra writes the resolved config and the overrides to `.hydra/`. Collecting all this costs
~0.1-0.3 s (git, package metadata), so `start` does it on a background thread while data loads.
Reading distributions through `importlib.metadata` avoids a `pip freeze` subprocess (~1 s).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from src.common.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[2]  # the repository whose code is running


def environment(device: torch.device) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "device": str(device),
        "device_name": _device_name(device),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "argv": sys.argv,
        "cwd": str(Path.cwd()),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or device.type


def requirements() -> str:
    """Installed distributions, sorted, `name==version` per line (like `pip freeze`)."""
    found = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    return "\n".join(sorted(found, key=str.lower)) + "\n"


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=PROJECT, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


def git_state() -> tuple[str, str]:
    """(git.txt, git.diff) of the running code; a readable note when git is unavailable."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError) as err:
        reason = "git is not installed" if isinstance(err, OSError) else "no commit found"
        return f"not a git repository ({reason}): {PROJECT}\n", ""
    branch = _git("rev-parse", "--abbrev-ref", "HEAD").strip()
    diff = _git("diff", "HEAD", "--binary")
    untracked = _git("ls-files", "--others", "--exclude-standard").splitlines()
    lines = [
        f"commit: {commit}",
        f"branch: {branch}",
        f"dirty: {str(bool(diff)).lower()} (uncommitted changes in git.diff)",
        f"untracked: {len(untracked)} file(s)",
        *(f"  {name}" for name in untracked[:200]),
    ]
    return "\n".join(lines) + "\n", diff


def code_version() -> str:
    """The running code in one word, `<commit>-<digest>`: the digest covers the uncommitted
    changes and the untracked .py and .yaml files, or without git every one under src/."""
    digest = hashlib.sha256()
    try:
        commit = _git("rev-parse", "HEAD").strip()[:12]
        digest.update(_git("diff", "HEAD", "--binary").encode())
        names = _git("ls-files", "--others", "--exclude-standard", "-z").split("\0")
        files = [PROJECT / name for name in names if name.endswith((".py", ".yaml"))]
    except (OSError, subprocess.SubprocessError):
        commit = "nogit"
        files = [*(PROJECT / "src").rglob("*.py"), *(PROJECT / "src").rglob("*.yaml")]
    for path in sorted(files):
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes())
    return f"{commit}-{digest.hexdigest()[:12]}"


def write_records(folder: Path, device: torch.device) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "environment.json", environment(device))
    summary, diff = git_state()
    atomic_write_bytes(folder / "git.txt", summary.encode())
    atomic_write_bytes(folder / "git.diff", diff.encode())
    atomic_write_bytes(folder / "requirements.txt", requirements().encode())


class RecordWriter:
    """`write_records` on a daemon thread; `join` waits for it and reports any failure."""

    def __init__(self, folder: Path, device: torch.device, enabled: bool = True) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(folder, device), name="run-records", daemon=True
        )
        if enabled:
            self._thread.start()

    def _run(self, folder: Path, device: torch.device) -> None:
        try:
            write_records(folder, device)
        except Exception as err:  # a missing record must never stop training
            self.error = err

    def join(self, timeout: float = 60.0) -> None:
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self.error is not None:
            log.warning("run records incomplete: %s", self.error)


if __name__ == "__main__":
    print(json.dumps(environment(torch.device("cpu")), indent=2))
    print(git_state()[0], requirements().count("\n"), "distributions installed")
