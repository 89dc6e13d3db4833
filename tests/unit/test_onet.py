"""MTCNN's O-Net (facenet-pytorch 2.6.0 `onet.pt`) converted to ONNX without torch, against torch.

tests/fixtures/onet/reference.npz holds 23 48x48 RGB chips cut by workers.models.onet.crop_chips from free
photos (the astronaut, Hopper, Chelsea, scikit-image's coffee and rocket: each at crop scales 1.0 and 1.1,
as cut and mirrored), two noise chips and a grey one, with facenet-pytorch's own `ONet` outputs for them,
made by tools/make_onet_reference.py with torch in a separate venv (torch is no dependency of the project).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from workers.models.convert import mtcnn_onet
from workers.models.fetch import fetch_source, model_path
from workers.models.onet import ONet, crop_chips, square_boxes
from workers.models.runtime import create_session

pytestmark = pytest.mark.models

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "onet" / "reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def onet() -> ONet:
    return ONet.from_file(model_path("mtcnn_onet"), create_session)


def test_matches_torch(onet: ONet, reference: dict[str, np.ndarray]) -> None:
    prob, box, points = onet.run(reference["chips"])
    diffs = {
        name: float(np.abs(got - reference[name]).max())
        for name, got in (("prob", prob), ("box", box), ("points", points))
    }
    print(f"O-Net parity vs torch {reference['torch_version']}, {len(prob)} chips: max abs {diffs}")
    assert prob.shape == (23, 2) and box.shape == (23, 4) and points.shape == (23, 10)
    assert max(diffs.values()) < 1e-4
    # The portraits' faces (8 chips) are faces to O-Net; noise and flat grey (the last 3) are not.
    assert (prob[:8, 1] > 0.99).all() and (prob[-3:, 1] < 0.01).all()


def test_reads_the_legacy_state_dict() -> None:
    weights = mtcnn_onet.read_state_dict(fetch_source("mtcnn_onet"))
    assert weights["conv1.weight"].shape == (32, 3, 3, 3) and weights["dense5.weight"].shape == (256, 1152)
    assert all(w.dtype == np.float32 and w.flags.c_contiguous for w in weights.values())
    # 8 weighted layers with biases, 5 PReLU slopes (some tensors are stored transposed: torch strides,
    # which the parity test checks were followed).
    assert len(weights) == 21


def test_refuses_foreign_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        for header in (mtcnn_onet.LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=4)
        pickle.dump(print, f, protocol=4)  # a global outside the four a state dict uses
    with pytest.raises(mtcnn_onet.TorchFormatError, match="refusing to load builtins.print"):
        mtcnn_onet.read_state_dict(path)
    zipped = tmp_path / "new.pt"
    zipped.write_bytes(b"PK\x03\x04")
    with pytest.raises(mtcnn_onet.TorchFormatError, match="zip"):
        mtcnn_onet.read_state_dict(zipped)


def test_crops_are_mtcnn_squares(onet: ONet) -> None:
    # A 40 x 80 box becomes an 80 x 80 square on the same centre (MTCNN's rerec); x1.1 widens it to 88.
    assert square_boxes(np.array([[100, 100, 140, 180]])).tolist() == [[80, 100, 160, 180]]
    assert square_boxes(np.array([[100, 100, 140, 180]]), 1.1).tolist() == [[76, 96, 164, 184]]
    image = np.full((100, 100, 3), 200, np.uint8)
    chips = crop_chips(image, np.array([[50, 50, 150, 150], [0, 0, 100, 100]], float))
    assert chips.shape == (2, 48, 48, 3) and chips.dtype == np.uint8
    # Outside the image is black, as MTCNN pads: the first crop's lower right three quarters.
    assert (chips[0, :24, :24] == 200).all() and (chips[0, 25:, 25:] == 0).all()
    assert (chips[1] == 200).all()
    assert crop_chips(image, np.zeros((0, 4))).shape == (0, 48, 48, 3)
    # Several scales at once: scale by scale, as the single-scale calls give them.
    boxes = np.array([[50, 50, 150, 150], [0, 0, 100, 100]], float)
    both = crop_chips(image, boxes, scales=(1.0, 1.1))
    assert (both == np.concatenate([crop_chips(image, boxes), crop_chips(image, boxes, scales=(1.1,))])).all()
    with pytest.raises(ValueError, match="48, 48, 3"):
        onet.run(np.zeros((1, 40, 40, 3), np.uint8))
