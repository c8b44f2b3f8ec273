"""Language modelling: predict every next token of a window; loss and bits per character.

A batch is a (B, T + 1) tensor of token ids (src/data/text.py): the model reads the first T and
is scored on the last T, with cross-entropy averaged over every position. `bpc` is that mean
loss in bits (nats / ln 2): the number of bits a code built from the model would need per
character of the text. `generate` continues a prompt by sampling one token at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.task.base import Task


class LanguageModel(Task):
    metric_names = ("loss", "bpc")

    def loss(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        return loss, loss

    def batch_values(self, loss: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        # Every window has T targets, so the window-weighted sum of batch means is exact.
        return {"nats": loss.detach() * len(batch)}

    def summarize(self, totals: Mapping[str, Any], samples: int) -> dict[str, float]:
        return {"bpc": totals.get("nats", 0.0) / max(samples, 1) / math.log(2)}

    def batch_size(self, batch: torch.Tensor) -> int:
        return len(batch)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    block_size: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue each row of `prompt` (B, L) by `length` tokens; return (B, L + length).

    The model sees the last `block_size` tokens (its context). `temperature` divides the logits:
    below 1 sharper, above 1 flatter, 0 always picks the most likely token. `top_k` > 0 samples
    among the k most likely tokens only. The same `generator` state gives the same text.
    """
    ids = prompt
    for _ in range(length):
        logits = model(ids[:, -block_size:])[:, -1, :].float()
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if 0 < top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probabilities = torch.softmax(logits, dim=-1)
            next_id = torch.multinomial(probabilities, 1, generator=generator)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


if __name__ == "__main__":
    from src.model.char_transformer import CharTransformer

    task, model = LanguageModel(), CharTransformer(vocab_size=10, block_size=8, n_layer=1)
    batch = torch.randint(0, 10, (4, 9))
    meter = task.metrics()
    loss, outputs = task.loss(model, batch)
    meter.update(loss, outputs, batch, task.batch_size(batch))
    print(meter.compute(), "(untrained: bpc near log2(10) = 3.32)")
    print(generate(model.eval(), batch[:1, :3], 5, block_size=8, top_k=3).tolist())
