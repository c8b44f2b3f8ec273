"""The docs name every config key the schemas define."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from src.config import schema

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configs.md"


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
