"""Sweeps: skip trials that already finished, and summarise a multirun folder.

`trial.py` is used by `src/main.py` for every trial; `summary.py` is the Hydra callback (and the
command `python -m src.sweep.summary <dir>`) that reads the trials back (`collect.py`) and writes
`summary.csv`, `summary.md` (`table.py`) and `summary.png` (`plot.py`).
"""
