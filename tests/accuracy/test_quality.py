"""Image quality on real photos of ../shared/data: blur / exposure / noise move monotonically along
controlled degradations, and quality_for_recognition predicts whether a face's genuine pairs are accepted.

The ladders and the fit are tools/calibrate_quality.py's; CACD-VS is left out of the recognition fit, so
the second test checks the model on faces it never saw.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import get_settings
from tests.accuracy.common import DATA
from tests.photos import requires_shared_data
from tools.calibrate_quality import BLUR_SIGMAS, EV_SHIFTS, NOISE_SIGMAS, face_crops, ladders
from workers.pipeline.attributes import _level, quality_calibration

pytestmark = [requires_shared_data, pytest.mark.models]


def test_levels_are_monotone_in_the_degradation() -> None:
    folder = DATA / "misc" / "deepface_tests_unit_dataset"
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("img*.jpg"))]
    measured = ladders(face_crops(photos))
    faces = len(measured["blur"])
    assert faces >= 40
    levels = quality_calibration()["image"]["levels"]
    order = {"blur": BLUR_SIGMAS, "noise": NOISE_SIGMAS, "exposure": EV_SHIFTS}
    for name in order:
        values = measured[name]
        steps = np.diff(values, axis=1)
        monotone = float((steps >= -0.01 * np.abs(values[:, :-1])).all(axis=1).mean())
        words = np.array([[_level(v, levels[name], (0, 1, 2)) for v in row] for row in values])
        ordered = float((np.diff(words, axis=1) >= 0).all(axis=1).mean())
        print(f"{name}: {faces} faces, monotone {monotone:.3f}, levels in order {ordered:.3f}")
        assert monotone >= 0.97 and ordered >= 0.97, name
    # The undegraded photos read low blur and noise, good exposure; the far ends of each ladder do not.
    for name, good, bad in (("blur", 0, 2), ("noise", 0, 2)):
        words = [_level(v, levels[name], (0, 1, 2)) for v in np.median(measured[name], axis=0)]
        assert words[0] == good and words[-1] == bad, (name, words)
    words = [_level(v, levels["exposure"], (0, 1, 2)) for v in np.median(measured["exposure"], axis=0)]
    assert words[0] == 0 and words[EV_SHIFTS.index(0.0)] == 1 and words[-1] == 2


def test_quality_for_recognition_predicts_genuine_acceptance() -> None:
    from workers.pipeline.analyse import get_pipeline
    from workers.recognition.calibration import threshold

    folder = DATA / "identity" / "cacd_vs"
    with open(folder / "pairs.csv") as f:
        genuine = [(r["image_a"], r["image_b"]) for r in csv.DictReader(f) if r["same"] == "1"][:150]
    pipeline = get_pipeline(get_settings().model_copy(update={"providers": "CPUExecutionProvider"}))
    faces = {}
    for name in sorted({n for pair in genuine for n in pair}):
        found = pipeline.analyse(
            np.asarray(Image.open(folder / name).convert("RGB")), {"bestface", "classifiers"}
        )
        if found:
            tags = {t.name: t for t in found[0].tags}
            faces[name] = (found[0].embeddings["facenet-keras-2024"], tags["quality_for_recognition"])
    cut = threshold("facenet-keras-2024", 1e-3)
    groups: dict[str, list[bool]] = {"both high": [], "one or both below high": []}
    for a, b in genuine:
        if a in faces and b in faces:
            accepted = 1.0 - float(faces[a][0] @ faces[b][0]) <= cut
            both = faces[a][1].value == faces[b][1].value == "high"
            groups["both high" if both else "one or both below high"].append(accepted)
    rates = {k: (len(v), float(np.mean(v))) for k, v in groups.items()}
    print(f"CACD-VS genuine pairs accepted at FMR 1e-3 by predicted quality: {rates}")
    assert min(len(v) for v in groups.values()) >= 20
    assert rates["both high"][1] >= rates["one or both below high"][1] + 0.1
