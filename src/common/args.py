"""`key=value` words of a command line: the one parser for them."""

from __future__ import annotations


def split_override(text: str) -> tuple[str, str]:
    """'+optimizer.lr=0.01' -> ('optimizer.lr', '0.01'); Hydra's + ++ ~ prefixes dropped."""
    key, _, value = str(text).partition("=")
    return key.lstrip("+~"), value


def key_values(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The `key=value` words as a dict (the last one wins), and the words without '='."""
    pairs = dict(split_override(arg) for arg in argv if "=" in arg)
    return pairs, [arg for arg in argv if "=" not in arg]


if __name__ == "__main__":
    print(key_values(["ckpt=a.pt", "+device=cpu", "oops"]))
