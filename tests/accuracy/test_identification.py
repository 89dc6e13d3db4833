"""Open-set identification (1:N with strangers): TPIR at FPIR 1 % per profile against face_recognition.

People: every identity-labelled colour set of ../shared/data with two or more photos per person (LAG,
face-api.js, deepface groups, CACD-VS same pairs; tests/accuracy/common.py identity_groups). Half of them
are enrolled (first photo in the gallery, the others are mated probes); every photo of the other half is
a non-mated probe. The threshold is set so that 1 % of non-mated probes match anyone (FPIR 1 %); TPIR is
the share of mated probes whose best gallery person is right and above that threshold.

The same photos also check the gallery-size rule the service applies to `all@namespace` targets
(workers/recognition/calibration.py): deciding at FMR = FPIR / N must keep the measured FPIR near 1 %.
Embeddings come from the run's shared cache (tests/accuracy/conftest.py): no photo is embedded twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.accuracy.common import (
    PEER,
    SYSTEMS,
    OpenSetResult,
    identity_groups,
    open_set_identification,
    open_set_split,
    similarity_matrix,
)
from tests.photos import requires_shared_data
from workers.recognition import calibration

pytestmark = [pytest.mark.models, pytest.mark.peers, requires_shared_data]
MEASURED = ("fast", "accurate", "facenet", "facenet-dlib", "facenet+sface+dlib", PEER)


@pytest.fixture(scope="module")
def results(embeddings) -> dict[str, OpenSetResult]:  # type: ignore[no-untyped-def]
    groups = identity_groups()
    out = {
        system: open_set_identification(groups, embeddings.embedder(system), similarity_matrix(system))
        for system in MEASURED
    }
    print()
    for system, r in out.items():
        print(
            f"open-set {system:19s} enrolled {r.enrolled}  mated {r.mated}  non-mated {r.non_mated}  "
            f"TPIR@FPIR1% {r.tpir:.4f}  rank-1 {r.rank1:.4f}"
        )
    return out


def test_profiles_identify_more_than_face_recognition(results: dict[str, OpenSetResult]) -> None:
    assert results["fast"].enrolled >= 250
    assert results["fast"].tpir >= results[PEER].tpir + 0.02
    assert results["accurate"].tpir >= results[PEER].tpir + 0.02


def test_sface_profiles_beat_the_facenet_ones(results: dict[str, OpenSetResult]) -> None:
    assert results["fast"].tpir >= results["facenet"].tpir + 0.02
    assert results["accurate"].tpir >= results["facenet-dlib"].tpir + 0.02
    assert results["accurate"].tpir >= results["fast"].tpir - 0.01


@pytest.mark.parametrize("profile", ["fast", "accurate"])
def test_gallery_size_rule_keeps_fpir(profile: str, embeddings) -> None:  # type: ignore[no-untyped-def]
    """Decide at the service's identification threshold: about FPIR 1 % of strangers match anyone."""
    key = "sface-2021dec" if profile == "fast" else profile
    # similarity_matrix gives cosine (one model) or minus the fused distance: back to the service's distance.
    offset = 1.0 if len(SYSTEMS[profile]) == 1 else 0.0
    alarms = loose = strangers = 0
    for split in open_set_split(identity_groups()).values():  # each data set is its own namespace
        g = [e for e in (embeddings.ours(p) for p in split.gallery.values()) if e is not None]
        n = [e for e in (embeddings.ours(p) for p in split.non_mated) if e is not None]
        nearest = (offset - similarity_matrix(profile)(n, g)).min(axis=1)
        threshold = calibration.identification_threshold(key, 0.01, len(g))
        alarms += int((nearest <= threshold).sum())
        # A gallery-blind threshold (FMR 1e-3 for every comparison) for comparison.
        loose += int((nearest <= calibration.threshold(key, 1e-3)).sum())
        strangers += len(split.non_mated)
        assert np.isfinite(threshold)
    fpir, fpir_loose = alarms / strangers, loose / strangers
    print(
        f"\n{profile}: FPIR {fpir:.4f} at FMR = 1 % / N, {fpir_loose:.4f} at FMR 1e-3 ({strangers} strangers)"
    )
    # Pairs are not independent (one probe, N chances), and the tail fit errs strict: at most 2 x target.
    assert fpir <= 0.02
    assert fpir_loose >= fpir
