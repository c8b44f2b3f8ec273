"""Each model config builds, with the fields the data fills, and trains one step on its data."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from test_config import OPTIONS, compose_with

from src import build

MODELS = [option for group, option in OPTIONS if group == "model"]
# What each model reads; a model not named here is tried on the default data (MNIST images).
DATA_OF = {"seq_pool": "sequences", "char_transformer": "text"}
INFO = {  # what those data modules put in Loaders.info
    "mnist": {"num_classes": 10, "in_channels": 1, "image_size": 28, "in_features": 784},
    "sequences": {"num_classes": 2, "in_features": 1},
    "text": {"vocab_size": 12, "vocab": "\n abcdefghij", "block_size": 16},
}


def example_batch(data: str) -> object:
    """A batch of 3 of what the model reads."""
    if data == "sequences":  # padded variable-length sequences (src/data/sequences.py)
        lengths = torch.tensor([[5], [2], [1]])
        return (torch.randn(3, 5, 1), torch.arange(5).unsqueeze(0) < lengths)
    if data == "text":  # character ids (src/data/text.py), as long as the context
        return torch.randint(0, INFO["text"]["vocab_size"], (3, INFO["text"]["block_size"]))
    return torch.randn(3, 1, 28, 28)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_from_the_data_and_every_parameter_learns(name: str) -> None:
    data = DATA_OF.get(name, "mnist")
    cfg = compose_with(f"model={name}", f"data={data}")
    build.fill_from_data(cfg, INFO[data])
    model = instantiate(cfg.model)
    outputs = model(example_batch(data))
    assert outputs.shape[0] == 3
    if "num_classes" in cfg.model:
        assert outputs.shape == (3, INFO[data]["num_classes"])
    if "vocab_size" in cfg.model:  # next-token logits at every position
        assert outputs.shape == (3, INFO[data]["block_size"], INFO[data]["vocab_size"])
    outputs.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_rejects_kernels_too_large_for_the_image() -> None:
    from src.model.cnn import CNN

    with pytest.raises(ValueError, match="too small"):
        CNN(channels=[4, 4, 4], kernel_sizes=[5, 5, 5], image_size=28)
