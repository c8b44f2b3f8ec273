"""Start a new project from this template: `make new-project NAME=<name> DEST=<path>`.

    python -m src.tools.new_project my-project ../my-project

Copies the tracked files only (no outputs, data, virtualenv or caches: `git ls-files` decides),
renames the project (pyproject `name`, the conda env in `environment.yml`, the README title),
and starts a fresh git repository with one commit. Standard library only, so it runs before
`make install`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2]
# A valid Python distribution name (PEP 508 / the packaging spec), compared case-insensitively.
NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


class NewProjectError(ValueError):
    """A bad NAME or DEST; the message is the one line shown."""


def check(name: str, dest: Path) -> None:
    if not NAME_RE.match(name):
        raise NewProjectError(
            f"NAME {name!r} is not a valid Python distribution name "
            "(letters, digits, '.', '_', '-'; starting and ending with a letter or digit)"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise NewProjectError(f"DEST {dest} exists and is not an empty folder")
    existing = next(p for p in (dest, *dest.parents) if p.exists())
    if not existing.is_dir():
        raise NewProjectError(f"DEST {dest} cannot be created: {existing} is a file")


def tracked_files(root: Path) -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise NewProjectError(f"cannot list the template's files with git ({err})") from err
    return [name for name in out.decode().split("\0") if name]


def copy_tracked(root: Path, dest: Path) -> int:
    """Copy every tracked file that exists in the working tree, keeping modes; return the count."""
    copied = 0
    for name in tracked_files(root):
        source = root / name
        if not source.is_file():  # deleted but not yet committed, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    return copied


def rename(dest: Path, name: str) -> None:
    """Put the new name in pyproject.toml, environment.yml and the README title."""
    edits = {
        "pyproject.toml": (r'(?m)^name = ".*"$', f'name = "{name}"'),
        "environment.yml": (r"(?m)^name: .*$", f"name: {name}"),
        "README.md": (r"(?m)\A# .*$", f"# {name}"),
    }
    for file, (pattern, replacement) in edits.items():
        path = dest / file
        if path.is_file():
            text = path.read_text()
            path.write_text(re.sub(pattern, replacement.replace("\\", r"\\"), text, count=1))


def git_init(dest: Path, name: str) -> None:
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=dest, capture_output=True, text=True)

    git("init", "-q")
    git("add", "-A")
    identity = []
    if not git("config", "user.email").stdout.strip():  # a fresh machine: commit anyway
        identity = ["-c", f"user.name={name}", "-c", f"user.email={name}@localhost"]
    result = git(*identity, "commit", "-q", "-m", f"Start {name} from the dl-template")
    if result.returncode != 0:
        raise NewProjectError(f"git commit failed in {dest}: {result.stderr.strip()}")


def create(name: str, dest: Path, template: Path = TEMPLATE) -> int:
    check(name, dest)
    dest.mkdir(parents=True, exist_ok=True)
    count = copy_tracked(template, dest)
    rename(dest, name)
    git_init(dest, name)
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m src.tools.new_project NAME DEST", file=sys.stderr)
        return 2
    name, dest = argv[0], Path(argv[1])
    try:
        count = create(name, dest)
    except (NewProjectError, OSError) as err:  # OSError: e.g. no permission to create DEST
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"created {name} in {dest} ({count} files, one commit). Next:")
    print(f"  cd {dest} && make install")
    print("  make run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
