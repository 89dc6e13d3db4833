"""What each detection_flags combination costs per face, through the pipeline a worker runs.

Photos: the free group photo (tests/photos.py) and, where ../shared/data exists, the 6-face insightface
group photo. Each combination is timed over every photo (best of --repeat), 1 onnxruntime thread, in CPU
time of this process (steadier than wall time on a shared machine; with 1 thread the two agree when the
machine is idle); the `basic` row is detection + 5 points + embedding, the others add to it.

    .venv/bin/python benchmarks/flags.py --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facequeue.settings import get_settings  # noqa: E402
from tests.photos import SHARED_DATA, group  # noqa: E402
from workers.pipeline.analyse import get_pipeline  # noqa: E402

COMBINATIONS = [
    "basic",
    "bestface",
    "propoints",
    "classifiers",
    "propoints,classifiers",
    "extended",
    "liveness",
]


def photos() -> list[np.ndarray]:
    found = [group()]
    t1 = SHARED_DATA / "misc" / "insightface_samples" / "python-package_images" / "t1.jpg"
    if t1.is_file():
        found.append(np.asarray(Image.open(t1).convert("RGB")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = get_settings().model_copy(update={"intra_op_threads": 1, "providers": "CPUExecutionProvider"})
    pipeline = get_pipeline(settings)
    images = photos()
    print(
        f"# {platform.processor() or platform.machine()}, {len(images)} photos, 1 thread, best of {args.repeat}"
    )
    basic_ms = None
    for flags in COMBINATIONS:
        wanted = set(flags.split(","))
        try:
            pipeline.analyse_many(images, wanted)  # warm-up (loads the models a flag needs)
        except Exception as exc:  # an optional model that is not installed
            print(f"{flags:24s} not available: {str(exc)[:80]}")
            continue
        best = float("inf")
        for _ in range(args.repeat):
            start = time.process_time()
            faces = sum(len(f) for f in pipeline.analyse_many(images, wanted))
            best = min(best, time.process_time() - start)
        per_face = 1000 * best / faces
        if flags == "basic":
            basic_ms = per_face
        added = (
            ""
            if basic_ms is None or flags in ("basic", "bestface")
            else f"  (+{per_face - basic_ms:.1f} over basic)"
        )
        print(f"{flags:24s} {faces:2d} faces  {per_face:6.1f} ms/face{added}")


if __name__ == "__main__":
    main()
