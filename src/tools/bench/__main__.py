"""`make bench`: what the template costs, measured side by side in one process.

    python -m src.tools.bench [--quick] [--out outputs/bench]

1. per-step time: a hand-written PyTorch loop vs the Runner with its default features on
   (tqdm bars, device-side metrics, metrics.csv and TensorBoard every 50 steps, the epoch-end
   checkpoint), for the default CNN and a tiny MLP, on the same synthetic MNIST-shaped batches,
   timed from step 10 to the last step; the end-of-epoch work gets its own row;
2. the same model and data under Lightning's Trainer with its defaults and `self.log` each step,
   when `lightning` is installed (`pip install -e ".[bench]"`);
3. data throughput: torchvision's MNIST through a DataLoader with per-sample transforms vs the
   in-memory loader;
4. end to end: wall time and test accuracy of the default `python -m src.main` job;
5. the cost of keeping an exponential moving average of the weights (runner.ema.decay);
6. `data=image_folder` on the MNIST PNG folder (images.py): first and later epochs against
   torchvision's ImageFolder, the loader's share of a step, and the Runner over a hand-written
   loop on the same DataLoader.
Variants are interleaved (A B A B ...) and the median of the repeats is reported, so drifts in
machine speed hit both sides alike. Prints a table; writes bench.md and bench.csv; always exits 0.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from src.launch.allocator import keep_freed_memory
from src.tools.bench.data import data_throughput, end_to_end
from src.tools.bench.images import image_folder_rows
from src.tools.bench.loops import Row, compare_ema, compare_loops

COLUMNS = ["benchmark", "baseline", "measured", "ratio", "overhead"]


def write_table(rows: list[Row], out: Path) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table + "\n")
    with open(out / "bench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1 minute)")
    parser.add_argument("--out", default="outputs/bench", help="folder for bench.md and bench.csv")
    args = parser.parse_args()
    keep_freed_memory()  # as `python -m src.main` does: every loop timed alike
    # (steps per epoch, Runner repeats, Lightning repeats): many short repeats beat a few long ones
    plan = {
        "cnn": (40, 3, 3) if args.quick else (40, 61, 7),
        "tiny-mlp": (214, 9, 3) if args.quick else (214, 81, 11),
    }
    repeats = 3 if args.quick else 5
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {repeats} repeats, medians"
    )
    rows: list[Row] = []
    for name, (steps, pairs, triplets) in plan.items():
        rows += compare_loops(name, steps, pairs, triplets)
        print(f"done: {name} ({steps} steps per repeat)", flush=True)
    rows += compare_ema("cnn", 40, 5 if args.quick else 31)
    rows += data_throughput(10000 if args.quick else 30000, repeats)
    rows += image_folder_rows(args.quick)
    print("done: image_folder", flush=True)
    rows += end_to_end(1 if args.quick else 3, ["runner.max_epochs=1"] if args.quick else [])
    print(write_table(rows, Path(args.out)))
    print(f"written to {args.out}/bench.md and bench.csv")


if __name__ == "__main__":
    main()
