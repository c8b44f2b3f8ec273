"""The docs name every config key the schemas define, and their links resolve."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from src.config import schema

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "configs.md"


def test_every_schema_field_is_documented() -> None:
    text = DOCS.read_text()
    missing = []
    for options in schema.SCHEMAS.values():
        for node in options.values():
            for field in dataclasses.fields(node):
                if not field.name.startswith("_") and f"`{field.name}`" not in text:
                    missing.append(f"{node.__name__}.{field.name}")
    for field in dataclasses.fields(schema.Config):
        if field.name not in schema.SCHEMAS and f"`{field.name}`" not in text:
            missing.append(f"Config.{field.name}")
    assert not missing, f"undocumented config keys: {missing}"


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
