"""Accuracy tests measure the models on the research photo sets: they need ../shared/data.

Embeddings are shared by the accuracy tests of one run: each photo is detected and embedded once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import get_settings
from tests.photos import requires_shared_data

HERE = Path(__file__).resolve().parent
MAX_SIDE = 800  # photos larger than this are shrunk first, for every system


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(requires_shared_data)


def load(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(image)


class Embeddings:
    """Best-face vectors per photo: ours (every model, int8 FaceNet too) and the peer's, memoised."""

    def __init__(self) -> None:
        from tests.accuracy.common import research_pipeline
        from tests.accuracy.peer import PeerEncoder

        settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
        self.pipeline = research_pipeline(settings, int8=True)
        self.peer = PeerEncoder()
        self._ours: dict[Path, dict[str, np.ndarray] | None] = {}
        self._theirs: dict[Path, np.ndarray | None] = {}

    def ours(self, path: Path) -> dict[str, np.ndarray] | None:
        if path not in self._ours:
            faces = self.pipeline.analyse(load(path), {"bestface"})
            self._ours[path] = faces[0].embeddings if faces else None
        return self._ours[path]

    def peer_vector(self, path: Path) -> np.ndarray | None:
        if path not in self._theirs:
            self._theirs[path] = self.peer.largest_face(load(path))
        return self._theirs[path]

    def embedder(self, system: str) -> Callable[[Path], object]:
        return self.peer_vector if system == "face_recognition" else self.ours


@pytest.fixture(scope="session")
def embeddings() -> Embeddings:
    return Embeddings()
