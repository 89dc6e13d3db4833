"""Age and gender on all 1,500 UTKFace crops (file name: age_gender_race_date; gender 0 = male)."""

from __future__ import annotations

import numpy as np
import pytest

from facequeue.settings import get_settings
from tests.accuracy.common import DATA, rgb
from workers.pipeline.analyse import FacePipeline

pytestmark = pytest.mark.models


def test_age_mae_and_gender_accuracy_on_utkface() -> None:
    settings = get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "embedding_profile": "fast"}
    )
    pipeline = FacePipeline.from_settings(settings)
    pipeline.embedders = []  # only detection, alignment and the classifiers are measured here
    files = sorted((DATA / "age_gender" / "utkface").glob("*.jpg"))
    assert len(files) == 1500
    errors, right, missed = [], 0, 0
    for path in files:
        age, gender = (int(v) for v in path.name.split("_")[:2])
        faces = pipeline.analyse(rgb(path), {"bestface", "classifiers"})
        if not faces:
            missed += 1
            continue
        tags = {t.name: t.value for t in faces[0].tags}
        errors.append(abs(int(tags["age"]) - age))
        right += tags["gender"] == ("male" if gender == 0 else "female")
    mae, accuracy = float(np.mean(errors)), right / len(errors)
    print(
        f"\nUTKFace: {len(errors)} faces ({missed} not detected): age MAE {mae:.2f} years, gender accuracy {accuracy:.4f}"
    )
    assert missed <= 15
    assert mae < 6.5
    assert accuracy > 0.82
