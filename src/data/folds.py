"""The validation set carved from the training set: a fixed random part, or one fold of K.

Both cut the same seeded permutation of the training rows, so a split is a pure function of
(n, seed, ...) and never changes between runs, resumes or ranks. With K folds the permutation is
cut into K contiguous parts (sizes differ by at most one); fold i validates and the other K - 1
train, so the K folds of one seed are disjoint and together cover every training row once.
A dataset with its own validation files has no use for this.
"""

from __future__ import annotations

import torch

from src.common.errors import InvalidValue


def check_folds(folds: int, fold: int, n: int | None = None) -> None:
    """InvalidValue unless folds is 0 (off) or 2..n, and 0 <= fold < folds."""
    if folds == 0 and fold == 0:
        return
    if folds < 2 or (n is not None and folds > n):
        limit = f" and at most the {n} training rows" if n is not None else ""
        raise InvalidValue(f"data.folds={folds} must be 0 (no folds) or at least 2{limit}")
    if not 0 <= fold < folds:
        raise InvalidValue(f"data.fold={fold} must be in [0, {folds}) for data.folds={folds}")


def carve_validation(
    n: int, val_size: int, seed: int, folds: int = 0, fold: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices of range(n): `val_size` random rows, or with `folds` > 0 the
    rows of fold `fold` (val_size is then unused)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if folds == 0:
        check_folds(folds, fold)
        if not 0 <= val_size < n:
            raise InvalidValue(f"val_size {val_size} must be in [0, {n})")
        return order[val_size:], order[:val_size]
    check_folds(folds, fold, n)
    begin, end = n * fold // folds, n * (fold + 1) // folds
    return torch.cat([order[:begin], order[end:]]), order[begin:end]


if __name__ == "__main__":
    for i in range(3):
        train, val = carve_validation(10, 0, seed=0, folds=3, fold=i)
        print(f"fold {i}: val {sorted(val.tolist())}, train {len(train)} rows")
