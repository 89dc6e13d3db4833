"""Population quantiles (20/40/60/80 %) of the `extended` measurement ratios, for measurements.QUANTILES.

Runs YuNet + mesh + iris on photos (default: every k-th UTKFace crop in ../shared/data), keeps the best
face of each photo when it is frontal-ish (|yaw| < --max-yaw, `attributes.head_pose`), computes
`measurements.ratios` and prints the quantile table as Python to paste into measurements.py.

    FACEQUEUE_MODEL_DIR=$HOME/.cache/facequeue/models FACEQUEUE_MODEL_MIRROR=/work/shared/models \
        .venv/bin/python tools/measurement_quantiles.py --limit 400 --cache /tmp/mq.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "age_gender" / "utkface"


def collect(photos: list[Path], max_yaw: float) -> dict[str, np.ndarray]:
    """Dense landmarks of the best frontal-ish face of each photo, stacked."""
    from workers.models.fetch import model_path
    from workers.models.runtime import create_session
    from workers.models.yunet import YuNet
    from workers.pipeline.attributes import head_pose
    from workers.pipeline.landmarks import LandmarkModels

    detector = YuNet(create_session(YuNet.dynamic_model_bytes(model_path("yunet"))))
    models = LandmarkModels.from_files(model_path("face_landmark"), model_path("iris_landmark"))
    keep: dict[str, list[np.ndarray]] = {"mesh": [], "iris": [], "eye_contour": [], "yaw": []}
    names = []
    for path in photos:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        det = detector.detect(rgb)
        if len(det) == 0:
            continue
        dense = models.predict(rgb, det.boxes[:1], det.landmarks[:1])
        yaw = float(head_pose(dense.mesh)[0, 0])
        if abs(yaw) >= max_yaw:
            continue
        keep["mesh"].append(dense.mesh[0])
        keep["iris"].append(dense.iris[0])
        keep["eye_contour"].append(dense.eye_contour[0])
        keep["yaw"].append(np.float64(yaw))
        names.append(path.name)
    out = {k: np.stack(v) for k, v in keep.items()}
    out["names"] = np.array(names)
    return out


def main() -> None:
    from workers.pipeline import measurements as M

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=400, help="photos to run (evenly spaced over the folder)")
    ap.add_argument("--max-yaw", type=float, default=20.0)
    ap.add_argument("--cache", type=Path, help="npz of collected landmarks (reused when present)")
    args = ap.parse_args()

    if args.cache and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        photos = sorted(args.data.glob("*.jpg"))
        step = max(len(photos) // args.limit, 1)
        data = collect(photos[::step][: args.limit], args.max_yaw)
        if args.cache:
            np.savez_compressed(args.cache, **data)
    ratios = M.ratios(data["mesh"], data["iris"], data["eye_contour"])
    print(f"# {len(data['mesh'])} faces with |yaw| < {args.max_yaw:g} from {args.data.name}")
    print("QUANTILES = {")
    for name, values in ratios.items():
        q = np.quantile(values, [0.2, 0.4, 0.6, 0.8])
        print(f'    "{name}": ({", ".join(f"{v:.4f}" for v in q)}),')
    print("}")


if __name__ == "__main__":
    main()
