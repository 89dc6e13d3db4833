"""Nearest-neighbour search over one (tenant, namespace, model) set of face embeddings.

`VectorIndex` is exact (one numpy matmul over the normalised vectors) while the set is small and
switches to an approximate HNSW index (usearch) once it holds `ann_min_size` vectors; it switches back
below half of that, so a namespace hovering at the limit does not rebuild on every change.
Distances are cosine distances, 1 - a.b, as in workers.recognition.calibration.

Sharing between worker processes: `save(path)` writes a folder per index; `load(path, view=True)`
memory-maps it (numpy mmap for the exact form, usearch `view` for the HNSW form), so every process
that searches the same namespace shares one copy through the OS page cache. A viewed index is
read-only on disk: the first add/remove turns it into a private in-memory copy, which the writer then
saves back (atomically: new folder, then rename).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

DIM = 128
# HNSW parameters, chosen with benchmarks/search.py (recall@10 >= 0.99 at 1M, see benchmarks/RESULTS.md).
CONNECTIVITY = 32  # M=16 needs ef 2048 for recall 0.99 at 1M; M=32 reaches 0.996 at ef 1024
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256  # minimum; larger indexes search wider, see expansion_for()
ANN_DTYPE = "f16"  # half-precision vectors: half the memory, recall loss below 0.001 on face embeddings
_FORMAT = 1


def expansion_for(n: int) -> int:
    """HNSW search width for an index of n vectors: recall@10 >= ~0.99 on face-like data needs it to grow
    with n (benchmarks/search.py, M=16: ef 256 gives 0.989 at 100k; M=32: ef 768 gives 0.993 at 1M)."""
    if n < 200_000:
        return EXPANSION_SEARCH
    if n < 2_000_000:
        return 3 * EXPANSION_SEARCH  # 768: recall@10 0.993, p99 8.8-13 ms at 1M (benchmarks/RESULTS.md)
    return 8 * EXPANSION_SEARCH


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, DIM)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def exact_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by cosine distance; pads with id -1 / distance inf when fewer than k vectors."""
    q = len(queries)
    out_ids = np.full((q, k), -1, dtype=np.int64)
    out_dist = np.full((q, k), np.inf, dtype=np.float32)
    n = len(ids)
    if n == 0 or k == 0:
        return out_ids, out_dist
    kk = min(k, n)
    for start in range(0, q, chunk):
        sims = queries[start : start + chunk] @ vectors.T
        if kk < n:
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(n), (len(sims), n))
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_ids[start : start + chunk, :kk] = ids[top]
        out_dist[start : start + chunk, :kk] = 1.0 - np.take_along_axis(top_sims, order, axis=1)
    return out_ids, out_dist


class VectorIndex:
    """Embeddings keyed by non-negative int64 ids (face ids); adding an existing id replaces its vector."""

    def __init__(self, ann_min_size: int = 20_000, threads: int = 1) -> None:
        self.ann_min_size = ann_min_size
        self.threads = threads  # per search call: requests are single queries, workers run in parallel
        self._ids = np.empty(0, dtype=np.int64)
        self._vectors = np.empty((0, DIM), dtype=np.float32)
        self._ann = None  # usearch.index.Index once large
        self._viewed = False
        self.expansion: int | None = None  # fixed HNSW search width; None = expansion_for(len(self))

    @property
    def approximate(self) -> bool:
        return self._ann is not None

    def __len__(self) -> int:
        return len(self._ann) if self._ann is not None else len(self._ids)

    def __contains__(self, face_id: int) -> bool:
        if self._ann is not None:
            return bool(self._ann.contains(int(face_id)))
        return bool(np.isin(face_id, self._ids))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = _normalise(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids) or (ids < 0).any():
            raise ValueError("ids must be unique and non-negative")
        self.remove(ids)
        if self._ann is not None:
            # Bulk loads (re-indexing a namespace) use every core; single faces stay on the caller's thread.
            self._ann.add(ids.astype(np.uint64), vectors, threads=0 if len(ids) >= 1000 else self.threads)
        else:
            self._ids = np.concatenate([self._ids, ids])
            self._vectors = np.concatenate([self._vectors, vectors])
        self._switch()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0 or len(self) == 0:
            return
        self._writable()
        if self._ann is not None:
            present = ids[np.asarray(self._ann.contains(ids.astype(np.uint64)), dtype=bool)]
            if len(present):
                self._ann.remove(present.astype(np.uint64))
        else:
            keep = ~np.isin(self._ids, ids)
            if not keep.all():
                self._ids = self._ids[keep]
                self._vectors = self._vectors[keep]
        self._switch()

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(ids (Q, k) int64, cosine distances (Q, k) float32), nearest first; -1 / inf pad short results."""
        queries = _normalise(queries)
        if self._ann is None:
            return exact_search(self._vectors, self._ids, queries, k)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        if len(queries) == 0 or k == 0 or len(self._ann) == 0:
            return out_ids, out_dist
        self._ann.expansion_search = max(self.expansion or expansion_for(len(self._ann)), k)
        matches = self._ann.search(queries, k, threads=self.threads)
        # usearch answers one query with `Matches` (keys (k',)) and several with `BatchMatches` (Q, k).
        counts = np.atleast_1d(matches.counts if hasattr(matches, "counts") else len(matches.keys))
        keys = np.asarray(matches.keys).reshape(len(queries), -1)
        distances = np.asarray(matches.distances).reshape(len(queries), -1)
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        out_ids[:, : keys.shape[1]] = np.where(valid, keys.astype(np.int64), -1)
        out_dist[:, : keys.shape[1]] = np.where(valid, distances, np.inf)
        return out_ids, out_dist

    # --- persistence -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index as a folder (replaced atomically) that `load(path, view=True)` can map."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {"format": _FORMAT, "kind": "ann" if self._ann is not None else "exact", "count": len(self)}
        if self._ann is not None:
            self._ann.save(str(tmp / "index.usearch"))
        else:
            np.save(tmp / "ids.npy", self._ids)
            np.save(tmp / "vectors.npy", self._vectors)
        (tmp / "meta.json").write_text(json.dumps(meta))
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], view: bool = True, ann_min_size: int = 20_000, threads: int = 1
    ) -> VectorIndex:
        """Open a saved index; view=True memory-maps it read-only (pages shared between processes)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unknown index format in {path}: {meta.get('format')}")
        index = cls(ann_min_size=ann_min_size, threads=threads)
        if meta["kind"] == "ann":
            from usearch.index import Index

            index._ann = Index.restore(str(path / "index.usearch"), view=view)
            if index._ann is None:
                raise ValueError(f"cannot read {path / 'index.usearch'}")
        else:
            mode = "r" if view else None
            index._ids = np.load(path / "ids.npy", mmap_mode=mode)
            index._vectors = np.load(path / "vectors.npy", mmap_mode=mode)
        index._viewed = view
        return index

    # --- internals ---------------------------------------------------------------------------------

    def _writable(self) -> None:
        """A memory-mapped index is read-only: copy it into private memory before the first change."""
        if not self._viewed:
            return
        if self._ann is not None:
            self._ann = self._ann.copy()
        else:
            self._ids = np.array(self._ids)
            self._vectors = np.array(self._vectors)
        self._viewed = False

    def _switch(self) -> None:
        if self._ann is None and len(self._ids) >= self.ann_min_size:
            self._ann = _new_ann()
            if len(self._ids):
                self._ann.add(self._ids.astype(np.uint64), self._vectors, threads=0)
            self._ids = np.empty(0, dtype=np.int64)
            self._vectors = np.empty((0, DIM), dtype=np.float32)
        elif self._ann is not None and len(self._ann) < self.ann_min_size // 2:
            keys = np.asarray(self._ann.keys, dtype=np.uint64)
            vectors = self._ann.get(keys, dtype=np.float32) if len(keys) else np.empty((0, DIM))
            self._ids = keys.astype(np.int64)
            self._vectors = _normalise(np.asarray(vectors))
            self._ann = None


def _new_ann():  # noqa: ANN202 - usearch is imported lazily: small deployments never need it
    from usearch.index import Index

    return Index(
        ndim=DIM,
        metric="ip",  # vectors are normalised: inner product = cosine, distance = 1 - a.b
        dtype=ANN_DTYPE,
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )
