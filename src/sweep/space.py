"""The search space of an Optuna study, written in Hydra's sweep syntax.

    optimizer.lr: tag(log, interval(0.001, 0.05))   a float drawn on a log scale
    runner.max_epochs: range(2, 8, 2)               the ints 2, 4, 6 (the end is left out)
    data.batch_size: choice(128, 256, 512)          one of the values
    model: cnn                                      a fixed override, the same in every trial

An interval with int ends (`int(interval(1, 9))`) draws ints; a float range draws on its grid;
`shuffle(range(...))` and `choice(...)` are categorical. The same keys on the command line
replace the yaml's.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from src.common.errors import UserError


class SearchSpaceError(UserError):
    """A sweep override Optuna cannot draw from (e.g. a glob)."""


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """`key=<sweep>` overrides as distributions, the plain ones as fixed `key -> value`."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        distributions.pop(key, None)  # a later override of the same key wins
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return distributions, fixed


def distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_values(override))
    if isinstance(value, RangeSweep):
        values = _values(override)
        if not values:
            raise SearchSpaceError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step or 1))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step or 1))
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None  # the grammar requires both
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SearchSpaceError(
        f"{override.input_line}: an Optuna sweep takes choice(), range() or interval()"
    )


def _values(override: Override) -> list[Any]:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, str | int | float | bool | type(None)):
            raise SearchSpaceError(f"{override.input_line}: {v!r} is not a plain value")
    return values


def as_override(key: str, value: Any) -> str:
    """`key=value` as Hydra reads it back (bools and None in Hydra's spelling)."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={'null' if value is None else value}"


if __name__ == "__main__":
    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(0.001, 0.05))",
            "data.batch_size=choice(128,256)",
            "seed=1",
        ]
    )
    for name, dist in space.items():
        print(name, dist)
    print("fixed:", fixed)
