"""`make predict` on image files written by the test, with a model trained in the test."""

from __future__ import annotations

import csv
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import synthetic_digits

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(finished_run: Path) -> Path:
    return finished_run / "checkpoints" / "best.pt"


def write_images(folder: Path) -> dict[str, int]:
    """Ten test digits (seed 2 is the test split) as PNG and JPEG, of several sizes and modes."""
    images, labels = synthetic_digits(10, seed=2)
    expected = {}
    for i, (pixels, label) in enumerate(zip(images, labels)):
        image = Image.fromarray(pixels, mode="L")
        if i % 3 == 1:
            image = image.resize((56, 56)).convert("RGB")  # bigger, colour
        name = f"digit{i}.jpg" if i % 3 == 2 else f"digit{i}.png"
        image.save(folder / name, quality=95)
        expected[name] = int(label)
    (folder / "notes.txt").write_text("not an image\n")
    return expected


def test_make_predict_classifies_png_and_jpeg_and_skips_text(
    checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    expected = write_images(folder)
    venv = Path(sys.executable).parent.parent
    make = ["make", "-s", "-C", str(REPO), f"VENV={venv}"]
    result = subprocess.run(
        [*make, "predict", f"CKPT={checkpoint}", f"INPUT={folder}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"skipped {folder / 'notes.txt'}: not an image" in result.stdout
    printed = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(str(folder)):
            printed[Path(parts[0]).name] = int(parts[1])
            assert 0.0 < float(parts[2]) <= 1.0
    assert printed == expected
    out = checkpoint.parent.parent / "predict" / checkpoint.stem / f"{folder.name}.csv"
    assert f"-> {out}" in result.stdout
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert {Path(r["file"]).name: int(r["class"]) for r in rows} == expected


def test_predict_single_file_to_a_chosen_csv(cli, checkpoint: Path, tmp_path: Path) -> None:
    expected = write_images(tmp_path)
    out = tmp_path / "out" / "p.csv"
    result = cli(
        f"ckpt={checkpoint}", f"input={tmp_path / 'digit0.png'}", f"out={out}", module="src.predict"
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and int(rows[0]["class"]) == expected["digit0.png"]


def test_predict_with_only_non_images_is_one_error_line(
    cli, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("hello")
    result = cli(f"ckpt={checkpoint}", f"input={tmp_path}", module="src.predict")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: input={tmp_path}: no readable images"]


def png_bomb(path: Path, side: int = 100_000) -> None:
    """A valid PNG header announcing side x side pixels (10 GB decoded) in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    rows = zlib.compress(b"\0" * (side + 1) * 2)  # two rows of zeros; the rest never comes
    body = chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_predict_skips_a_decompression_bomb_and_reads_16_bit_grey(
    cli, checkpoint: Path, tmp_path: Path
) -> None:
    images, labels = synthetic_digits(3, seed=2)
    for i, pixels in enumerate(images):  # the same digits with 16 bits per pixel
        Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / f"deep{i}.png")
    Image.fromarray(images[0]).save(tmp_path / "flat0.png")
    png_bomb(tmp_path / "bomb.png")
    out = tmp_path / "out.csv"
    result = cli(f"ckpt={checkpoint}", f"input={tmp_path}", f"out={out}", module="src.predict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"skipped {tmp_path / 'bomb.png'}: more than predict.max_pixels=" in result.stdout
    assert "Warning" not in result.stdout + result.stderr  # no PIL or NumPy warnings either
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == ["deep0.png", "deep1.png", "deep2.png", "flat0.png"]
    assert [int(rows[f"deep{i}.png"]["class"]) for i in range(3)] == labels.tolist()
    assert float(rows["deep0.png"]["probability"]) == pytest.approx(
        float(rows["flat0.png"]["probability"]), abs=1e-3
    )


def test_default_outputs_of_two_checkpoints_or_two_inputs_never_clash(tmp_path: Path) -> None:
    from src.predict import default_out

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    best, step = run / "checkpoints" / "best.pt", run / "checkpoints" / "step-4.pt"
    outs = {default_out(c, tmp_path / i) for c in (best, step) for i in ("cats", "dogs.png")}
    assert len(outs) == 4 and all(o.is_relative_to(run / "predict") for o in outs)
