"""Api CPU per face-image request: decoding the original (before) against the stored face crop (now).

A 17 Mpx JPEG (the free astronaut portrait scaled up to 4800×3600, the size that made one average-face
request cost 66 s of api CPU) with the face box where the detector puts it. Both paths cut the same face
(box + 25 %); "before" is what api/faces.py did per face per call, "now" is what it does, on the crop the
worker stored (workers/pipeline/crops.py). Prints milliseconds per face image, best of --repeat, and the
ratio; and the cost of cutting the crop once in the worker.

    .venv/bin/python benchmarks/face_images.py --repeat 5
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from tests.photos import astronaut
from workers.pipeline.crops import crop_rgb, make_crop, to_crop
from workers.pipeline.decode import decode_image

SCALE = 4800 / 512  # astronaut is 512 × 512; the canvas 4800 × 3600


def best(repeat: int, run) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    face = (
        Image.fromarray(astronaut()).resize((4800, 4800), Image.Resampling.BICUBIC).crop((0, 0, 4800, 3600))
    )
    buffer = io.BytesIO()
    face.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    box = np.array([170, 60, 290, 210]) * SCALE  # the portrait's face, scaled
    points = np.array([[205, 120], [255, 120], [230, 150], [210, 180], [250, 180]], float) * SCALE
    limits = (64 * 1024 * 1024, 40_000_000)

    def cut(rgb: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
        w, h = x2 - x1, y2 - y1
        return rgb[int(max(0, y1 - h / 4)) : int(y2 + h / 4), int(max(0, x1 - w / 4)) : int(x2 + w / 4)]

    before = best(args.repeat, lambda: cut(decode_image(data, *limits).rgb, *box))
    rgb = decode_image(data, *limits).rgb
    worker = best(args.repeat, lambda: make_crop(rgb, box, points))
    crop = make_crop(rgb, box, points)
    (x1, y1), (x2, y2) = to_crop([box[:2], box[2:]], crop)
    now = best(args.repeat * 4, lambda: cut(crop_rgb(crop), x1, y1, x2, y2))
    print(
        f"image {face.width}x{face.height} ({len(data) / 1e6:.1f} MB JPEG); crop stored: {len(crop.jpeg) / 1e3:.0f} kB"
    )
    print(f"api per face image, decoding the original (before): {before:8.1f} ms")
    print(f"api per face image, from the stored crop (now):     {now:8.1f} ms   ratio {before / now:.0f}x")
    print(f"worker, cutting the crop once at processing:        {worker:8.1f} ms")


if __name__ == "__main__":
    main()
