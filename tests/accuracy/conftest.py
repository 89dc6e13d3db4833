"""Accuracy tests measure the models on the research photo sets: they need ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.photos import requires_shared_data

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(requires_shared_data)
