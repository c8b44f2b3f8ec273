"""Write the prepared MNIST as PNG files in the image-folder layout, to try `data=image_folder`
on known data:

    python -m src.data.export_mnist data/mnist_png [--root data]    (or: make export-mnist)
    -> data/mnist_png/train/<digit>/<n>.png (60,000), data/mnist_png/test/<digit>/<n>.png (10,000)

The folder is written under a hidden name and renamed when complete; an existing one is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from PIL import Image
from torchvision.datasets import MNIST
from tqdm import tqdm

from src.data.idx import DataError
from src.data.mnist import load_tensors
from src.data.prepare import MNIST_MD5, prepare_raw_files


def export_mnist(
    out: str | Path, root: str | Path = "data", download: bool = True, verify_md5: bool = True
) -> Path:
    out = Path(out)
    if out.exists():
        raise DataError(f"{out} already exists: remove it or choose another folder")
    prepare_raw_files(MNIST, root, MNIST_MD5 if verify_md5 else None, download)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        for split, train in (("train", True), ("test", False)):
            images, labels = load_tensors(MNIST, root, train=train)
            for digit in set(labels.tolist()):
                (partial / split / str(digit)).mkdir(parents=True)
            pairs = zip(images.numpy(), labels.tolist())
            for n, (pixels, label) in enumerate(tqdm(pairs, total=len(labels), desc=split)):
                Image.fromarray(pixels).save(partial / split / str(label) / f"{n:05d}.png")
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to create, e.g. data/mnist_png")
    parser.add_argument("--root", default="data", help="where MNIST's raw files are prepared")
    args = parser.parse_args(argv)
    try:
        out = export_mnist(args.out, args.root)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f'wrote {out}/train and {out}/test: make run ARGS="data=image_folder data.root={out}"')


if __name__ == "__main__":
    main(sys.argv[1:])
