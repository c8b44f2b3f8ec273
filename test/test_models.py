"""Each model config builds a module with the right output shape."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from test_config import OPTIONS, compose_with

MODELS = [option for group, option in OPTIONS if group == "model"]


def example_input(name: str) -> tuple[object, int]:
    """A batch of 3 of what the model reads, and its number of classes."""
    if name.startswith("seq_"):  # padded variable-length sequences (src/data/sequences.py)
        lengths = torch.tensor([[5], [2], [1]])
        return (torch.randn(3, 5, 1), torch.arange(5).unsqueeze(0) < lengths), 2
    return torch.randn(3, 1, 28, 28), 10


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_of_every_model(name: str) -> None:
    model = instantiate(compose_with(f"model={name}").model)
    inputs, classes = example_input(name)
    logits = model(inputs)
    assert logits.shape == (3, classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_rejects_kernels_too_large_for_the_image() -> None:
    from src.model.cnn import CNN

    with pytest.raises(ValueError, match="too small"):
        CNN(channels=[4, 4, 4], kernel_sizes=[5, 5, 5], image_size=28)
