"""VectorIndex: exact mode equals brute force, HNSW recall on clustered data, remove, save/load (view)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.recognition.index import VectorIndex, exact_search, expansion_for


def clustered(n: int, seed: int = 0, per_id: int = 5, same_cos: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // per_id + 1, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, 128))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    a = np.sqrt(same_cos)
    faces = a * centres[np.arange(n) // per_id] + np.sqrt(1 - same_cos) * noise
    return (faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32)


def brute_force(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    distances = 1.0 - queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(distances, axis=1)[:, :k]
    return ids[order], np.take_along_axis(distances, order, axis=1)


def test_exact_mode_equals_brute_force() -> None:
    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11
    index = VectorIndex(ann_min_size=10_000)
    index.add(ids, vectors)
    assert not index.approximate and len(index) == 3000
    queries = clustered(50, seed=1)
    got_ids, got_dist = index.search(queries, 10)
    want_ids, want_dist = brute_force(vectors, ids, queries, 10)
    np.testing.assert_allclose(got_dist, want_dist, atol=1e-5)
    assert (got_ids == want_ids).mean() > 0.99  # ties in float32 may swap equal neighbours only
    assert np.all(np.diff(got_dist, axis=1) >= 0)


def test_short_results_are_padded() -> None:
    index = VectorIndex()
    index.add(np.array([5, 6]), clustered(2))
    ids, distances = index.search(clustered(3, seed=2), 4)
    assert ids.shape == (3, 4) and (ids[:, 2:] == -1).all() and np.isinf(distances[:, 2:]).all()
    empty_ids, _ = VectorIndex().search(clustered(1), 3)
    assert (empty_ids == -1).all()


def test_ann_recall_on_clustered_set() -> None:
    vectors = clustered(5000)
    ids = np.arange(5000, dtype=np.int64)
    index = VectorIndex(ann_min_size=1000)
    index.add(ids, vectors)
    assert index.approximate
    queries = clustered(200, seed=3)
    got, distances = index.search(queries, 10)
    truth = exact_search(vectors, ids, queries, 10)[0]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)])
    assert recall >= 0.95
    # distances are cosine distances of the (f16-stored) vectors
    want = 1.0 - np.einsum("qd,qkd->qk", queries, vectors[got])
    np.testing.assert_allclose(distances, want, atol=2e-3)


@pytest.mark.parametrize("ann_min_size", [10_000, 500])
def test_remove_and_replace(ann_min_size: int) -> None:
    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64)
    index = VectorIndex(ann_min_size=ann_min_size)
    index.add(ids, vectors)
    index.remove(np.array([3, 4, 99_999]))  # unknown ids are ignored
    assert len(index) == 1998 and 3 not in index and 5 in index
    found, _ = index.search(vectors[[3, 4]], 5)
    assert not np.isin(found, [3, 4]).any()
    # adding an existing id replaces its vector
    index.add(np.array([5]), vectors[[100]])
    assert len(index) == 1998
    found, distances = index.search(vectors[[100]], 2)
    assert set(found[0]) == {5, 100} and distances[0, 1] < 1e-2


def test_switches_between_exact_and_ann() -> None:
    vectors = clustered(1200)
    index = VectorIndex(ann_min_size=1000)
    index.add(np.arange(900), vectors[:900])
    assert not index.approximate
    index.add(np.arange(900, 1200), vectors[900:])
    assert index.approximate and len(index) == 1200
    index.remove(np.arange(800))  # below half the limit: back to exact, vectors kept
    assert not index.approximate and len(index) == 400
    found, distances = index.search(vectors[1000:1001], 1)
    assert found[0, 0] == 1000 and distances[0, 0] < 1e-2


@pytest.mark.parametrize("ann_min_size", [10_000, 500])
def test_save_load_round_trip(tmp_path: Path, ann_min_size: int) -> None:
    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) + 10**12
    index = VectorIndex(ann_min_size=ann_min_size)
    index.add(ids, vectors)
    queries = clustered(20, seed=4)
    before = index.search(queries, 10)
    index.save(tmp_path / "ns")
    index.save(tmp_path / "ns")  # overwriting an existing save works
    for view in (True, False):
        loaded = VectorIndex.load(tmp_path / "ns", view=view, ann_min_size=ann_min_size)
        assert len(loaded) == 2000 and loaded.approximate == index.approximate
        after = loaded.search(queries, 10)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_allclose(after[1], before[1], atol=1e-6)
    # a viewed index becomes a private copy on change; the file on disk is untouched
    viewed = VectorIndex.load(tmp_path / "ns", view=True, ann_min_size=ann_min_size)
    viewed.remove(ids[:10])
    assert len(viewed) == 1990
    assert len(VectorIndex.load(tmp_path / "ns", ann_min_size=ann_min_size)) == 2000


def test_search_width_grows_with_size() -> None:
    sizes = [1_000, 100_000, 1_000_000, 10_000_000]
    widths = [expansion_for(n) for n in sizes]
    assert widths == sorted(widths) and widths[0] >= 128 and widths[2] > widths[1]
