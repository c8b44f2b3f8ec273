"""A minimal, hackable training template: Hydra builds the pieces, `Runner` runs the loop."""
