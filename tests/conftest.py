"""A tiny procedural dataset shared by the tests (generated once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import small_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from pointstn.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    summary = generate_dataset(small_config(), root, workers=1, progress=False)
    assert summary.failures == () and summary.objects == 9 and summary.views == 27
    return root
