"""How a metric reads on screen: 4 decimals, or 4 significant digits when that would hide it.

An MSE of 1.6e-5 printed with `%.4f` reads `0.0000`; here it reads `1.600e-05`.
"""

from __future__ import annotations


def show(value: float | int) -> str:
    if isinstance(value, int):  # bools and counts as they are
        return str(value)
    magnitude = abs(value)
    if magnitude != magnitude or magnitude == float("inf"):
        return str(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


if __name__ == "__main__":
    print([show(v) for v in (0.99241, 1.6e-5, 123456.0, 3, float("nan"))])
