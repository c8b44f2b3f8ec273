"""Hydra configuration: yaml groups under this folder, typed by the schemas in `schema.py`."""
