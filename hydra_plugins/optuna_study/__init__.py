"""This project's Optuna sweeper, found by Hydra's plugin scan (see sweeper.py)."""
