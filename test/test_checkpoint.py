"""Checkpoints and atomic writes: numeric pruning, no leftovers, modes that follow the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.common.files import atomic_write_json
from src.training import checkpoint
from src.training.checkpoint import Checkpointer, CheckpointWriteError


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def test_written_files_follow_the_umask_like_any_other_file(umask_027, tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "results.json", {"ok": True})
    saver = Checkpointer(tmp_path / "checkpoints", keep_last_k=1)
    saver.save({"step": 1}, 1, is_best=True)
    saver.wait()
    (tmp_path / "plain.txt").write_text("written by open()")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o640}, modes  # group can read: shared storage works


def test_pruning_keeps_the_newest_steps_by_number_not_by_name(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, keep_last_k=2)
    for step in (9_999_998, 9_999_999, 10_000_000, 10_000_001):  # past the 7-digit padding
        saver.save({"step": step}, step)
    saver.wait()
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-10000000.pt", "step-10000001.pt"]


def test_a_failed_write_leaves_no_partial_or_link_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".last.pt.0123456789ab.tmp").write_bytes(b"left by a kill -9")
    saver = Checkpointer(tmp_path, keep_last_k=1)  # owns the folder: stale temporaries go
    saver.save({"step": 1}, 1)
    saver.wait()
    before = (tmp_path / "last.pt").read_bytes()

    rename = os.replace

    def no_room_for_best(source: str | Path, target: str | Path) -> None:
        if Path(target).name == "best.pt":
            raise OSError(28, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(checkpoint.os, "replace", no_room_for_best)  # best.pt cannot land
    saver.save({"step": 2}, 2, is_best=True)
    with pytest.raises(CheckpointWriteError, match=r"could not write .*best\.pt"):
        saver.wait()
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() != before  # last.pt itself was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-0000001.pt"]
