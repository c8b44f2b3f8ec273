"""Generate text with a trained language model: the prompt, then `length` sampled characters.

    python -m src.sample ckpt=<file.pt> | run=<run dir> [prompt=...] [length=500]
                         [temperature=0.8] [top_k=0] [seed=0] [device=cpu]
    make sample CKPT=<file.pt> PROMPT="def " [ARGS="length=1000 temperature=0.5"]

The model, the vocabulary and the context length all come from the checkpoint (its config and
`data_info`), so sampling never reads the training text. Other key=value pairs override the
checkpoint's config, as for `src.eval`. The text goes to stdout, nothing is written.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from typing import Any

import torch

from src.common.args import key_values
from src.data.idx import DataError
from src.data.text import decode, encode
from src.eval import Trained, load_trained
from src.eval import parse_args as checkpoint_args
from src.launch.cli import run_script
from src.task.language_model import LanguageModel, generate
from src.training.checkpoint import CheckpointError


@dataclass
class SampleOptions:
    prompt: str = "\n"  # the text to continue; every character must be in the model's vocabulary
    length: int = 500  # characters to generate after the prompt
    temperature: float = 0.8  # below 1 sharper, above 1 flatter; 0 = always the likeliest character
    top_k: int = 0  # sample among the k likeliest characters only (0 = among all)
    seed: int = 0  # the same checkpoint, options and seed give the same text


def parse_args(argv: list[str]) -> tuple[SampleOptions, list[str]]:
    """The sampling options, and the rest for `src.eval.parse_args` (ckpt=/run=, overrides)."""
    pairs, _ = key_values(argv)
    fields = {f.name: f for f in dataclasses.fields(SampleOptions)}
    given: dict[str, Any] = {}
    for name, value in pairs.items():
        if name in fields:
            kind = type(getattr(SampleOptions, name))
            try:
                given[name] = kind(value)
            except ValueError as err:
                raise CheckpointError(f"{name}={value}: not a valid {kind.__name__}") from err
    options = SampleOptions(**given)
    if options.length < 0 or options.temperature < 0 or options.top_k < 0:
        raise CheckpointError("length, temperature and top_k must be >= 0")
    rest = [arg for arg in argv if arg.partition("=")[0].lstrip("+~") not in fields]
    return options, rest


def sample(trained: Trained, options: SampleOptions) -> str:
    """The prompt and its continuation, decoded with the checkpoint's vocabulary."""
    info = trained.data_info
    if not isinstance(trained.task, LanguageModel) or "vocab" not in info:
        raise CheckpointError(
            f"this checkpoint's task is {type(trained.task).__name__}, not a language model: "
            "sample needs a run trained with task=language_model"
        )
    vocab = info["vocab"]
    try:
        prompt = encode(options.prompt, vocab).unsqueeze(0).to(trained.device)
    except DataError as err:  # a character the model never saw
        raise CheckpointError(f"prompt: {err}") from None
    if prompt.numel() == 0:
        raise CheckpointError("prompt is empty: give at least one character to continue")
    generator = torch.Generator(trained.device).manual_seed(options.seed)
    ids = generate(
        trained.model,
        prompt,
        options.length,
        int(info["block_size"]),
        temperature=options.temperature,
        top_k=options.top_k,
        generator=generator,
    )
    return decode(ids[0].cpu(), vocab)


def main(argv: list[str]) -> str:
    options, rest = parse_args(argv)
    path, out, overrides = checkpoint_args(rest)
    if out is not None:
        raise CheckpointError("sample prints its text to stdout; it takes no out=")
    text = sample(load_trained(path, overrides), options)
    sys.stdout.write(text + "\n")
    return text


if __name__ == "__main__":
    run_script(main, logging.WARNING)
