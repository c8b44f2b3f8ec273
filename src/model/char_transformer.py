"""A small GPT-style decoder for characters (after nanoGPT): token and position embeddings,
pre-norm blocks of causal self-attention and an MLP, a final norm and a linear head.

`forward(ids)` maps (B, T) int64 ids to (B, T, vocab_size) logits; the output at position t
depends only on ids[:, : t + 1]. Every repeated layer is a `Block` (what a sharding policy wraps)
and every parameter is a plain tensor of an `nn.Linear`, `nn.Embedding` or `nn.LayerNorm`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} must be a multiple of n_head {n_head}")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        heads = (batch, steps, self.n_head, width // self.n_head)
        q, k, v = (t.reshape(heads).transpose(1, 2) for t in self.qkv(x).split(width, dim=2))
        # is_causal: the fused kernels mask the future themselves, no mask tensor is built
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return F.dropout(self.proj(y.transpose(1, 2).reshape(x.shape)), dropout, self.training)


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): pre-norm keeps deep stacks stable."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(n_embd)
        self.attention = CausalSelfAttention(n_embd, n_head, dropout)
        self.norm2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.norm = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(_init_weights)
        for name, weight in self.named_parameters():  # GPT-2: residual outputs scaled by depth
            if name.endswith(("attention.proj.weight", "mlp.2.weight")):
                nn.init.normal_(weight, std=0.02 / math.sqrt(2 * n_layer))
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        if steps > self.block_size:
            raise ValueError(f"{steps} ids are more than block_size {self.block_size}")
        x = self.token_embedding(ids) + self.position_embedding.weight[:steps]
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


if __name__ == "__main__":
    model = CharTransformer(vocab_size=100, block_size=128)
    logits = model(torch.randint(0, 100, (4, 128)))
    params = sum(p.numel() for p in model.parameters())
    print(f"CharTransformer: ids (4, 128) -> {tuple(logits.shape)}, {params:,} parameters")
