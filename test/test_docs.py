"""The config reference is current and complete, and the docs' links resolve."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from src.config import reference, schema
from src.config.sweeper import OptunaSweeperConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "configs.md"


def test_the_config_reference_in_the_docs_is_current() -> None:
    assert (
        reference.reference() in DOCS.read_text()
    ), "docs/configs.md is out of date: run `python -m src.config.reference --write`"


def test_every_schema_field_has_a_meaning_beside_it() -> None:
    missing = []
    options = (n for o in schema.SCHEMAS.values() for n in o.values())
    for node in [schema.Config, *options, OptunaSweeperConfig]:
        comments = reference.field_comments(node)
        missing += [
            f"{node.__name__}.{f.name}"
            for f in dataclasses.fields(node)
            if f.name != "_partial_" and not comments.get(f.name)
        ]
    assert not missing, f"schema fields without a '# meaning' comment: {missing}"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve() -> None:
    pages = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("src/**/README.md")]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
