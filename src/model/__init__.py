"""Models: plain `nn.Module`s that know nothing of configs, runners or training."""
