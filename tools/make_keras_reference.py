"""Make the Keras reference fixtures for the FaceNet and emotion parity tests.

Runs in a separate virtual environment with TensorFlow (never a dependency of the project), e.g.

    python3.11 -m venv /work/scratch/keras/venv
    /work/scratch/keras/venv/bin/pip install "tensorflow-cpu==2.16.*" "tf-keras==2.16.*" pillow dlib-bin
    /work/scratch/keras/venv/bin/python tools/make_keras_reference.py \
        --facenet path/to/facenet_keras_2024.h5 --emotion path/to/emotion_model.hdf5

Python must be 3.11: the FaceNet file's Lambda layers are marshalled 3.11 bytecode that Keras loads.
Inputs are real photos from ../shared/data: ArcFace-aligned 112x112 Glint crops resized to the 160x160
FaceNet chip, and grey 64x64 face crops of the face-api.js expression photos cut the way the `fer` package
cuts them. Writes tests/fixtures/{facenet,emotion}/reference.npz with the uint8 chips, their source
files and the Keras outputs. The preprocessing here mirrors workers/models/{facenet,emotion}.py; the
parity tests feed the uint8 chips through those wrappers, so a drift between the two fails the tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

# Two crops each of four people: enough to see same-person pairs sit closer than different ones.
FACENET_CHIPS = [
    "identity/glint_celeb/Barack_Obama",
    "identity/glint_celeb/Halle_Berry",
    "identity/glint_celeb/Keanu_Reeves",
    "identity/glint_celeb/Tina_Fey",
]
EMOTION_PHOTOS = [
    "misc/face-api.js/examples_images/angry.jpg",
    "misc/face-api.js/examples_images/disgusted.jpg",
    "misc/face-api.js/examples_images/fearful.jpg",
    "misc/face-api.js/examples_images/happy.jpg",
    "misc/face-api.js/examples_images/sad.jpg",
    "misc/face-api.js/examples_images/surprised.jpg",
    "misc/face-api.js/examples_images/neutral.jpg",
    "misc/face_recognition_ageitgey/examples/biden.jpg",
]
FER_PADDING = 40  # fer.fer.PADDING
FER_OFFSETS = (10, 10)  # fer.FER default offsets


def load_keras(path: Path):  # noqa: ANN201 - keras is only in the reference venv
    try:
        import tf_keras as keras
    except ImportError:
        import keras
    return keras.models.load_model(str(path), compile=False)


def prewhiten(chips: np.ndarray) -> np.ndarray:
    """Per image: (x - mean) / max(std, 1/sqrt(pixels)), over all pixels and channels."""
    x = chips.astype(np.float64).reshape(len(chips), -1)
    mean = x.mean(axis=1, keepdims=True)
    std = np.maximum(x.std(axis=1, keepdims=True), 1.0 / np.sqrt(x.shape[1]))
    return ((x - mean) / std).reshape(chips.shape).astype(np.float32)


def facenet_chips() -> tuple[np.ndarray, list[str]]:
    chips, sources = [], []
    for folder in FACENET_CHIPS:
        for path in sorted((DATA / folder).glob("*.png"))[:2]:
            image = Image.open(path).convert("RGB").resize((160, 160), Image.BILINEAR)
            chips.append(np.asarray(image))
            sources.append(str(path.relative_to(DATA)))
    return np.stack(chips), sources


def fer_crop(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """fer's crop: square box, offsets, image padded by 40 px with the mean of its bottom two rows."""
    x, y, w, h = box
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    mean = grey[-2:].mean()
    padded = np.pad(grey.astype(np.float64), FER_PADDING, constant_values=mean).round().astype(np.uint8)
    x1, y1 = max(0, x - FER_OFFSETS[0] + FER_PADDING), max(0, y - FER_OFFSETS[1] + FER_PADDING)
    x2, y2 = x + w + FER_OFFSETS[0] + FER_PADDING, y + h + FER_OFFSETS[1] + FER_PADDING
    face = Image.fromarray(padded[y1:y2, x1:x2])
    return np.asarray(face.resize((64, 64), Image.BILINEAR))


def emotion_chips() -> tuple[np.ndarray, list[str]]:
    import dlib

    detector = dlib.get_frontal_face_detector()
    chips, sources = [], []
    for name in EMOTION_PHOTOS:
        rgb = np.asarray(Image.open(DATA / name).convert("RGB"))
        rects = detector(rgb, 1)
        if not rects:
            raise SystemExit(f"no face found in {name}")
        r = max(rects, key=lambda r: r.width() * r.height())
        grey = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601 luma, as cv2's BGR2GRAY
        chips.append(fer_crop(grey, (r.left(), r.top(), r.width(), r.height())))
        sources.append(name)
    return np.stack(chips), sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facenet", type=Path, required=True, help="facenet_keras_2024.h5")
    parser.add_argument("--emotion", type=Path, required=True, help="emotion_model.hdf5")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = parser.parse_args()

    import tensorflow as tf

    versions = f"tensorflow {tf.__version__}"

    chips, sources = facenet_chips()
    model = load_keras(args.facenet)
    raw = model.predict(prewhiten(chips), verbose=0).astype(np.float32)
    (args.out / "facenet").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "facenet" / "reference.npz", chips=chips, sources=sources, raw=raw, versions=versions
    )
    print("facenet", chips.shape, raw.shape, "norms", np.linalg.norm(raw, axis=1).round(3))

    chips, sources = emotion_chips()
    model = load_keras(args.emotion)
    x = ((chips.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]
    probs = model.predict(x, verbose=0).astype(np.float32)
    (args.out / "emotion").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "emotion" / "reference.npz", chips=chips, sources=sources, probs=probs, versions=versions
    )
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for name, p in zip(sources, probs, strict=True):
        print(f"emotion {Path(name).name:12s} -> {labels[int(p.argmax())]} {p.max():.2f}")


if __name__ == "__main__":
    main()
