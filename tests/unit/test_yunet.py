"""YuNet detector: the dynamic-shape edit changes nothing, decoding and point order on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.photos import astronaut, group
from workers.models.fetch import model_path
from workers.models.yunet import YuNet, nms


def session(model: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def yunet_file() -> Path:
    return model_path("yunet")


@pytest.fixture(scope="module")
def detector(yunet_file: Path) -> YuNet:
    return YuNet(session(YuNet.dynamic_model_bytes(yunet_file)))


def test_nms_keeps_best_of_overlaps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]


@pytest.mark.models
def test_dynamic_graph_matches_shipped_graph_at_640(yunet_file: Path, detector: YuNet) -> None:
    shipped = session(str(yunet_file))
    image = np.asarray(Image.fromarray(astronaut()).resize((640, 640)))
    x = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
    want = shipped.run(None, {"input": x})
    got = detector.session.run(None, {"input": x})
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape
        assert np.array_equal(w, g)


@pytest.mark.models
def test_batch_equals_single_images(detector: YuNet) -> None:
    images = [astronaut(), group()]
    batched = detector.detect_batch(images)
    for image, b in zip(images, batched, strict=True):
        single = detector.detect(image)
        assert len(single) == len(b)
        # Padding to a common size may move a score in the last digits, never a face.
        np.testing.assert_allclose(b.boxes, single.boxes, atol=0.5)


@pytest.mark.models
def test_points_in_image_order_on_real_photo(detector: YuNet) -> None:
    faces = detector.detect(astronaut())
    assert len(faces) == 1 and faces.scores[0] > 0.8
    x1, y1, x2, y2 = faces.boxes[0]
    pts = faces.landmarks[0]
    assert np.all((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2))
    right_eye, left_eye, nose, right_mouth, left_mouth = pts
    # Subject's right eye / mouth corner are on the image's left in a frontal photo.
    assert right_eye[0] < nose[0] < left_eye[0]
    assert right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


@pytest.mark.models
def test_group_photo_and_downscaling(detector: YuNet) -> None:
    image = group()  # 1100 x 600, two faces
    small = detector.detect(image)
    assert len(small) == 2
    full = YuNet(detector.session, max_side=1280).detect(image)
    assert len(full) == 2
    # Boxes found on the downscaled copy are mapped back to the original pixels.
    order_small = np.argsort(small.boxes[:, 0])
    order_full = np.argsort(full.boxes[:, 0])
    sides = full.boxes[order_full, 2] - full.boxes[order_full, 0]
    error = np.abs(small.boxes[order_small] - full.boxes[order_full]).max(axis=1)
    assert np.all(error < 0.1 * sides)


@pytest.mark.models
def test_threshold_and_min_face_size(detector: YuNet) -> None:
    image = group()
    assert len(YuNet(detector.session, min_face_size=500).detect(image)) == 0
    assert len(YuNet(detector.session, score_threshold=0.99).detect(image)) == 0
    blank = np.full((300, 500, 3), 128, np.uint8)
    assert len(detector.detect(blank)) == 0
