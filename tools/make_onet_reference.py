"""Make the torch reference fixture for the O-Net parity test (tests/unit/test_onet.py).

Two steps, because torch is never a dependency of the project:

1. In the project venv, cut the 48x48 chips (free photos only: the astronaut, Hopper and Chelsea of
   tests/photos.py, scikit-image's coffee and rocket, plus noise and flat grey) the way
   workers/models/onet.py cuts them:

       python tools/make_onet_reference.py chips

2. In a throwaway venv with torch (e.g. `python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install
   torch==2.13.0 numpy`), run facenet-pytorch's own `ONet` class and weights from the unpacked
   facenet-pytorch 2.6.0 wheel (`pip download --no-deps facenet-pytorch==2.6.0`, unzip it):

       /tmp/tvenv/bin/python tools/make_onet_reference.py torch --wheel-dir DIR

   Its preprocessing is MTCNN's: (x - 127.5) * 0.0078125 on the NCHW float chip. Writes the three
   outputs into tests/fixtures/onet/reference.npz next to the chips.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "onet" / "reference.npz"


def make_chips() -> None:
    sys.path.insert(0, str(ROOT))
    from skimage import data

    from tests.photos import astronaut, cat, hopper
    from workers.models.onet import crop_chips

    # Face boxes (x1, y1, x2, y2) as YuNet places them on the portraits, and Chelsea's hand-placed face.
    sources = [
        (astronaut(), [[178, 63, 268, 176]]),
        (hopper(), [[183, 120, 353, 333]]),
        (cat(), [[100, 40, 390, 300]]),
        (np.ascontiguousarray(data.coffee()), [[150, 50, 450, 350]]),
        (np.ascontiguousarray(data.rocket()), [[200, 100, 400, 300]]),
    ]
    chips = []
    for image, boxes in sources:
        for scale in (1.0, 1.1):
            chip = crop_chips(image, np.array(boxes, float), scales=(scale,))
            chips += [chip, chip[:, :, ::-1]]
    rng = np.random.default_rng(0)
    chips.append(rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8))
    chips.append(np.full((1, 48, 48, 3), 128, np.uint8))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, chips=np.concatenate(chips))
    print(f"{FIXTURE}: {len(np.concatenate(chips))} chips")


def run_torch(wheel_dir: Path) -> None:
    # facenet_pytorch's package __init__ pulls in InceptionResnetV1 (requests) and the detection helpers
    # (torchvision); ONet needs neither: skip the __init__ and stub torchvision for the helpers' imports.
    import torch

    package = types.ModuleType("facenet_pytorch")
    package.__path__ = [str(wheel_dir / "facenet_pytorch")]
    sys.modules["facenet_pytorch"] = package

    for name in ("torchvision", "torchvision.transforms", "torchvision.ops", "torchvision.ops.boxes"):
        stub = types.ModuleType(name)
        stub.functional = None  # type: ignore[attr-defined]
        stub.batched_nms = None  # type: ignore[attr-defined]
        sys.modules[name] = stub
    from facenet_pytorch.models.mtcnn import ONet  # type: ignore[import-not-found]

    net = ONet(pretrained=True).eval()
    with np.load(FIXTURE) as f:
        chips = f["chips"]
    x = torch.from_numpy(chips.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        box, points, prob = net((x - 127.5) * 0.0078125)
    np.savez_compressed(
        FIXTURE,
        chips=chips,
        prob=prob.numpy(),
        box=box.numpy(),
        points=points.numpy(),
        torch_version=np.array(torch.__version__),
    )
    print(f"{FIXTURE}: face probabilities {np.round(prob.numpy()[:, 1], 4)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=("chips", "torch"))
    parser.add_argument("--wheel-dir", type=Path, help="the unpacked facenet-pytorch 2.6.0 wheel")
    args = parser.parse_args()
    if args.step == "chips":
        make_chips()
    else:
        if args.wheel_dir is None:
            parser.error("torch needs --wheel-dir")
        run_torch(args.wheel_dir)


if __name__ == "__main__":
    main()
