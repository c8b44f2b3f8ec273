"""Sweeps: what happens around each trial, and the summary of a sweep folder (see README.md)."""
