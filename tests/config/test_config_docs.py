"""docs/CONFIG.md lists exactly the keys of the experiment schema."""

from __future__ import annotations

import re
from pathlib import Path

from pointstn.config import ExperimentConfig, to_dict

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"


def _schema_keys(data: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _schema_keys(value, prefix + key + ".")
        else:
            keys.add(prefix + key)
    return keys


def _documented_keys() -> set[str]:
    keys: set[str] = set()
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first_cell)
        section = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys.update(n if "." in n or not section else section + n for n in names)
    return keys


def test_config_doc_matches_schema():
    documented, schema = _documented_keys(), _schema_keys(to_dict(ExperimentConfig()))
    assert sorted(schema - documented) == [], "schema keys missing from docs/CONFIG.md"
    assert sorted(documented - schema) == [], "docs/CONFIG.md lists keys the schema does not have"
