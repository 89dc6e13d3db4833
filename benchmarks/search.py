"""Top-10 search over synthetic clustered face embeddings: exact numpy vs HNSW (usearch, faiss, hnswlib).

Data: identity centres uniform on the 128-D sphere, 5 faces per identity at a same-person cosine of
about 0.7 (what FaceNet gives for two photos of one person), queries = fresh faces of indexed identities.
Measures build time, RSS delta and index bytes, single-query latency p50/p99 and recall@10 vs exact.

    python benchmarks/search.py --sizes 10000 100000 --libs usearch faiss hnswlib
    python benchmarks/search.py --sizes 1000000 --libs usearch      # built once, cached in --cache
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.recognition.index as index_module  # noqa: E402
from workers.recognition.index import (  # noqa: E402
    EXPANSION_ADD,
    EXPANSION_SEARCH,
    VectorIndex,
    exact_search,
)

DIM = 128
FACES_PER_ID = 5
SAME_COS = 0.7


def clustered(n: int, spectrum: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors in identities of FACES_PER_ID, and their identity centres.

    spectrum "uniform": centres uniform on the sphere (all 128 directions equal; the hardest case for
    HNSW). "face": centre variance along axis i falls as i^-0.8, the power law measured on our FaceNet
    and dlib embeddings of the calibration photos (participation ratio ~47 and ~31 of 128 dimensions).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // FACES_PER_ID + 1, DIM), dtype=np.float32)
    if spectrum == "face":
        centres *= np.arange(1, DIM + 1, dtype=np.float32) ** -0.4  # std = sqrt(variance i^-0.8)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return faces_of(centres, np.arange(n) // FACES_PER_ID, rng), centres


def faces_of(centres: np.ndarray, which: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Two faces a*c + b*u, a*c + b*v with u, v random unit: expected cosine a^2 = SAME_COS.
    a = np.float32(np.sqrt(SAME_COS))
    out = np.empty((len(which), DIM), dtype=np.float32)
    for start in range(0, len(which), 100_000):
        part = which[start : start + 100_000]
        noise = rng.standard_normal((len(part), DIM), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        faces = a * centres[part] + np.sqrt(1 - a * a) * noise
        out[start : start + len(part)] = faces / np.linalg.norm(faces, axis=1, keepdims=True)
    return out


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Usearch:
    name = "usearch"

    def build(self, vectors: np.ndarray, cache: Path | None) -> None:
        self.index = VectorIndex(ann_min_size=0)
        if cache is not None and (cache / "meta.json").exists():
            self.index = VectorIndex.load(cache, view=True)
            self.loaded = True
            return
        self.loaded = False
        self.index.add(np.arange(len(vectors), dtype=np.int64), vectors)
        if cache is not None:
            self.index.save(cache)

    def search(self, query: np.ndarray) -> np.ndarray:
        return self.index.search(query, 10)[0][0]

    def set_ef(self, ef: int) -> None:
        self.index.expansion = ef

    def nbytes(self) -> int:
        return int(self.index._ann.serialized_length)


class Faiss:
    name = "faiss"

    def build(self, vectors: np.ndarray, cache: Path | None) -> None:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.index = faiss.IndexHNSWFlat(DIM, index_module.CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EXPANSION_ADD
        self.index.add(vectors)
        self.index.hnsw.efSearch = EXPANSION_SEARCH
        faiss.omp_set_num_threads(1)  # single queries: OpenMP start-up would dominate
        self.loaded = False

    def search(self, query: np.ndarray) -> np.ndarray:
        return self.index.search(query, 10)[1][0]

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def nbytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)


class Hnswlib:
    name = "hnswlib"

    def build(self, vectors: np.ndarray, cache: Path | None) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(
            max_elements=len(vectors), M=index_module.CONNECTIVITY, ef_construction=EXPANSION_ADD
        )
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=os.cpu_count() or 1)
        self.index.set_ef(EXPANSION_SEARCH)
        self.index.set_num_threads(1)
        self.loaded = False

    def search(self, query: np.ndarray) -> np.ndarray:
        return self.index.knn_query(query, k=10)[0][0]

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def nbytes(self) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            self.index.save_index(f"{tmp}/h.bin")
            return os.path.getsize(f"{tmp}/h.bin")


LIBS = {"usearch": Usearch, "faiss": Faiss, "hnswlib": Hnswlib}


def latencies(fn, queries: np.ndarray) -> np.ndarray:  # noqa: ANN001
    out = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        fn(queries[i : i + 1])
        out[i] = time.perf_counter() - start
    return out * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--libs", nargs="+", default=["usearch"], choices=sorted(LIBS))
    parser.add_argument("--spectrum", choices=["face", "uniform"], default="face")
    parser.add_argument("--connectivity", type=int, default=index_module.CONNECTIVITY, help="HNSW M")
    parser.add_argument("--dtype", default=index_module.ANN_DTYPE, help="usearch storage: f32, f16, i8")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, nargs="+", default=[EXPANSION_SEARCH], help="search expansions")
    parser.add_argument("--cache", type=Path, default=Path("/work/scratch/search"))
    args = parser.parse_args()
    index_module.CONNECTIVITY = args.connectivity
    index_module.ANN_DTYPE = args.dtype
    print(f"spectrum {args.spectrum}, {FACES_PER_ID} faces per identity at cosine {SAME_COS}")
    print(f"usearch dtype {index_module.ANN_DTYPE}")
    print(f"HNSW M={index_module.CONNECTIVITY} ef_construction={EXPANSION_ADD} ef_search={EXPANSION_SEARCH}")
    for n in args.sizes:
        vectors, centres = clustered(n, args.spectrum)
        rng = np.random.default_rng(1)
        queries = faces_of(centres, rng.integers(0, n // FACES_PER_ID, args.queries), rng)
        ids = np.arange(n, dtype=np.int64)
        truth = exact_search(vectors, ids, queries, 10)[0]
        exact_ms = latencies(partial(exact_search, vectors, ids, k=10), queries[:200])
        p50_exact, p99_exact = np.percentile(exact_ms, [50, 99])
        print(
            f"\nn={n:,}  exact numpy: p50 {p50_exact:.2f} ms  p99 {p99_exact:.2f} ms  ({vectors.nbytes / 2**20:.0f} MiB)"
        )
        for name in args.libs:
            lib = LIBS[name]()
            before = rss()
            start = time.perf_counter()
            tag = f"{args.spectrum}_{n}" + (
                ""
                if (args.connectivity, args.dtype) == (16, "f16")
                else f"_M{args.connectivity}_{args.dtype}"
            )
            cache = args.cache / f"{name}_{tag}" if name == "usearch" else None
            lib.build(vectors, cache)
            build_s = time.perf_counter() - start
            grown = rss() - before
            built = "loaded (view)" if lib.loaded else f"build {build_s:.1f} s"
            print(
                f"  {name:8s} {built}  RSS +{grown / 2**20:.0f} MiB  "
                f"index {lib.nbytes() / 2**20:.0f} MiB ({lib.nbytes() / n:.0f} B/vector)",
                flush=True,
            )
            for ef in args.ef:
                lib.set_ef(ef)
                lib.search(queries[:1])
                ms = latencies(lib.search, queries)
                found = np.stack([lib.search(queries[i : i + 1]) for i in range(len(queries))])
                recall = np.mean([len(set(found[i]) & set(truth[i])) / 10 for i in range(len(queries))])
                p50, p99 = np.percentile(ms, [50, 99])
                print(
                    f"    ef {ef:4d}  recall@10 {recall:.4f}  p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
                    f"exact p50 / this p50 = {p50_exact / p50:.1f}",
                    flush=True,
                )
            del lib


if __name__ == "__main__":
    main()
