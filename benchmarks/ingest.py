"""Batch ingestion end to end: `facequeue ingest` → api → Redis → N worker processes on Postgres, against
the raw pipeline with the same N processes and face_recognition's own CLI, same photos, same run.

    python benchmarks/ingest.py --photos 3000 --processes 2            # the full run
    nice -n 10 python benchmarks/ingest.py --photos 300 --processes 2  # a shorter run on a busy machine

Phases, one after another (never overlapping, so each gets the same cores):
1. service: a fresh Postgres database and Redis db, `facequeue api`, one `facequeue worker
   --concurrency N`; the photos go through `facequeue ingest` (its code, run in this process) into a batch. Meanwhile an interactive client uploads one photo every few
   seconds (no batch) and times upload → done. Reported: images/s and faces/s over the whole ingest
   (first upload to last result), enqueue (POST /v2/media without ?wait=) p50/p99 from a probe,
   interactive time-to-done p50/p95.
2. pipeline: the same photos (bytes decoded inside the timing, as a worker does) through
   `FacePipeline.analyse` in N processes (multiprocessing), same flags; models loaded before timing.
3. peer: `face_recognition --cpus N known/ photos/` (ageitgey's CLI: HOG detection, 68-point
   landmarks, ResNet encodings, compare), timed from start to exit.

`--profile DIR` samples the api and the workers with py-spy during phase 1 (collapsed stacks in DIR) and
prints where each spends its CPU; the figures of such a run are slower and are not results.

Photos: ../shared/data (CACD, UTKFace, WIDER and misc photos, interleaved so a small N mixes them) when
present, else variants of the free photos (tests/photos.py) made by resizing, cropping and JPEG quality.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import hashlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facequeue.client import Client  # noqa: E402
from facequeue.settings import get_settings  # noqa: E402
from tests.photos import SHARED_DATA, astronaut, encode, group, hopper  # noqa: E402

FACEQUEUE = [sys.executable, "-m", "facequeue.cli"]


@contextlib.contextmanager
def fresh_database(pg: str, prefix: str) -> Iterator[str]:
    """A new, empty Postgres database for one run (its URL), dropped afterwards whatever happens."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{pg}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{pg}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def shared_photos(n: int, folder: Path) -> list[Path]:
    """n distinct photos (by content: CACD-VS repeats files across its pairs) of ../shared/data, topped up
    with free-photo variants when the data holds fewer."""
    sets = [
        sorted((SHARED_DATA / "identity" / "cacd_vs").rglob("*.jpg")),
        sorted((SHARED_DATA / "age_gender" / "utkface").rglob("*.jpg")),
        sorted((SHARED_DATA / "detection" / "wider_train_subset").rglob("*.jpg")),
        sorted((SHARED_DATA / "misc").rglob("*.jpg")),
    ]
    mixed = [p for group_ in itertools.zip_longest(*sets) for p in group_ if p is not None]
    seen: set[str] = set()
    distinct = []
    for path in mixed:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen and len(distinct) < n:
            seen.add(digest)
            distinct.append(path)
    return distinct + free_photos(n - len(distinct), folder)


def free_photos(n: int, folder: Path) -> list[Path]:
    """Distinct files made from the free photos: scale, crop and JPEG quality vary per file."""
    from PIL import Image

    bases = [Image.fromarray(rgb) for rgb in (astronaut(), hopper(), group())]
    paths = []
    for i in range(n):
        base = bases[i % len(bases)]
        scale = 0.4 + 0.6 * ((i * 37) % 100) / 100
        w, h = base.size
        dx, dy = (i * 7) % 40, (i * 11) % 40
        crop = base.crop((dx, dy, w - (i * 5) % 40, h - (i * 3) % 40))
        small = crop.resize((max(64, int(crop.width * scale)), max(64, int(crop.height * scale))))
        path = folder / f"free-{i:05d}.jpg"
        path.write_bytes(encode(np.asarray(small), quality=60 + (i * 13) % 36))
        paths.append(path)
    return paths


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds so far) from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    return table


def cpu_by_role(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's process trees, of Postgres and Redis, and of the whole machine."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)

    def tree(pid: int) -> float:
        return table.get(pid, (0, "", 0.0))[2] + sum(tree(child) for child in children.get(pid, []))

    out = {role: sum(tree(pid) for pid in pids) for role, pids in roles.items()}
    out["postgres + redis"] = sum(c for _, n, c in table.values() if n.startswith(("postgres", "redis")))
    fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    out["machine"] = (sum(map(int, fields)) - int(fields[3]) - int(fields[4])) / os.sysconf("SC_CLK_TCK")
    return out


def enqueue_probe(base: str, key: str, stop: threading.Event, every_s: float, out: list[float]) -> None:
    """Time POST /v2/media alone (no ?wait=) while the bulk runs: ingest's own uploads ask the server to
    hold each answer until the job is done, so their round trip is not the enqueue latency. The probe's
    photos (small, faceless: next to no work) go into a batch of their own on the bulk queue, so they do
    not jump ahead of the ingest."""
    with Client(base, key) as client:
        for i in itertools.count():
            if stop.wait(every_s):
                return
            data = encode(np.full((64, 64 + i % 64, 3), i % 256, np.uint8))  # distinct bytes
            start = time.perf_counter()
            client.upload(data, batch="enqueue-probe")
            out.append(time.perf_counter() - start)


def interactive_probe(
    base: str, key: str, flags: str, stop: threading.Event, every_s: float, out: list[float]
) -> None:
    """One interactive upload (a distinct photo, no batch) every few seconds while the bulk runs."""
    with Client(base, key) as client:
        for i in itertools.count():
            if stop.wait(every_s):
                return
            data = encode(np.asarray(hopper()[(i // 100) % 60 :, : 400 + (i % 100)]))  # distinct, one face
            start = time.perf_counter()
            client.upload(data, flags=flags).wait(timeout=600)
            out.append(time.perf_counter() - start)


def run_service(paths: list[Path], args: argparse.Namespace, work: Path) -> dict:
    with fresh_database(args.pg, "facequeue_ingest") as database_url:
        return _run_service(database_url, paths, args, work)


def _run_service(database_url: str, paths: list[Path], args: argparse.Namespace, work: Path) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": args.redis,
        "FACEQUEUE_HOME": str(work / "home"),
        # the models this process uses (the pipeline phase): workers find them cached, not fetch them again
        "FACEQUEUE_MODEL_DIR": str(get_settings().resolved_model_dir),
    }
    api = worker = lane = None
    try:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        subprocess.run([*FACEQUEUE, "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
        key = subprocess.run(
            [*FACEQUEUE, "keys", "create", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.splitlines()[-1]
        base = f"http://127.0.0.1:{args.port}"
        api = subprocess.Popen(
            [
                *profiler(args, "api"),
                *FACEQUEUE,
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker_log = (work / "worker.log").open("w")
        worker = subprocess.Popen(
            [
                *profiler(args, "workers"),
                *FACEQUEUE,
                "worker",
                "--concurrency",
                str(args.worker_processes or args.processes),
            ]
            + ["--loglevel", "WARNING"],
            env=env,
            cwd=ROOT,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        if args.interactive_lane:  # docker-compose.yml's worker-interactive: one process, no bulk work
            lane = subprocess.Popen(
                [*FACEQUEUE, "worker", "--interactive-only", "--concurrency", "1", "--loglevel", "WARNING"],
                env=env,
                cwd=ROOT,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        # Warm-up: every worker process loads its models before the clock starts.
        with Client(base, key) as client:
            warm = [
                client.upload(encode(np.asarray(astronaut()[i:, i:])), flags=args.flags)
                for i in range(4 * args.processes)
            ]
            for job in warm:
                job.wait(timeout=600)
        manifest = work / "manifest.txt"
        manifest.write_text("".join(f"{p}\n" for p in paths))
        out = work / "results.jsonl"
        ingest_args = SimpleNamespace(
            sources=[str(manifest)],
            flags=args.flags,
            namespace="",
            person_from_folder=False,
            concurrency=args.concurrency,
            per_request=args.per_request,
            out=str(out),
            state=None,
            batch="bench",
            timeout=3600,
            quiet=True,
            url=base,
            api_key=key,
        )
        from facequeue.ingest import run_ingest

        probe: list[float] = []
        enqueue: list[float] = []
        stop = threading.Event()
        probes = [
            threading.Thread(
                target=interactive_probe, args=(base, key, args.flags, stop, args.probe_every, probe)
            ),
            threading.Thread(target=enqueue_probe, args=(base, key, stop, 0.5, enqueue)),
        ]
        client = Client(base, key, max_connections=args.concurrency + 4)
        roles = {"api": [api.pid], "workers": [p.pid for p in (worker, lane) if p]}
        cpu_before = {**cpu_by_role(roles), "client": sum(os.times()[:2])}  # the client: this process
        start = time.perf_counter()
        for thread in probes:
            thread.start()
        code = run_ingest(ingest_args, client)
        elapsed = time.perf_counter() - start
        cpu_after = {**cpu_by_role(roles), "client": sum(os.times()[:2])}
        cpu = {role: round(t - cpu_before[role], 1) for role, t in cpu_after.items()}
        stop.set()
        for thread in probes:
            thread.join()
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        faces = sum(len(line["faces"]) for line in lines)
        batch = client.batch("bench")
        return {
            "exit": code,
            "images": len(lines),
            "done": sum(line["status"] == "done" for line in lines),
            "faces": faces,
            "seconds": elapsed,
            "images/s": len(lines) / elapsed,
            "faces/s": faces / elapsed,
            "enqueue n": len(enqueue),
            "enqueue p50 ms": 1000 * percentile(enqueue, 0.5),
            "enqueue p99 ms": 1000 * percentile(enqueue, 0.99),
            "interactive n": len(probe),
            "interactive p50 s": percentile(probe, 0.5),
            "interactive p95 s": percentile(probe, 0.95),
            "batch images/s (server)": batch["images_per_s"],
            "batch counts": batch["counts"],
            "cpu seconds": cpu,
        }
    finally:
        for process in (api, worker, lane):
            if process is not None:
                if args.profile and process is not lane:  # stop py-spy's child: py-spy then writes its file
                    subprocess.run(["pkill", "-TERM", "-P", str(process.pid)], check=False)
                else:
                    process.terminate()
                process.wait(timeout=60)


def profiler(args: argparse.Namespace, role: str) -> list[str]:
    """py-spy in front of a role's command (on-CPU samples of it and its children), when --profile."""
    if not args.profile:
        return []
    args.profile.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    return [py_spy, "record", "--subprocesses", "--rate", "200", "--format", "raw"] + [
        "-o",
        str(args.profile / f"{role}.txt"),
        "--",
    ]


def print_profile(path: Path, top: int = 30) -> None:
    """Share of on-CPU samples per function, inclusive and self, from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        own[frames[-1]] += int(count)
    print(f"\n{path.stem}: {total} on-CPU samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"  {title}:")
        for frame, count in counter.most_common(top):
            print(f"    {100 * count / total:5.1f} %  {frame}")


_PIPELINE = None


def _init_pipeline(flags: str) -> None:
    global _PIPELINE
    from workers.pipeline.analyse import get_pipeline

    _PIPELINE = get_pipeline(get_settings())
    _analyse(encode(astronaut()), flags)  # warm-up


def _analyse(data: bytes, flags: str) -> int:
    from schema.flags import parse_flags
    from workers.pipeline.decode import decode_image

    settings = get_settings()
    rgb = decode_image(data, settings.max_upload_bytes, settings.max_image_pixels).rgb
    return len(_PIPELINE.analyse(rgb, set(parse_flags(flags)), options={"landmark_set": "betaface"}))


def _analyse_path(job: tuple[str, str]) -> int:
    path, flags = job
    return _analyse(Path(path).read_bytes(), flags)


def run_pipeline(paths: list[Path], args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.processes, initializer=_init_pipeline, initargs=(args.flags,)) as pool:
        pool.map(_analyse_path, [(str(paths[0]), args.flags)] * args.processes)  # every process started
        machine_before = cpu_by_role({})["machine"]
        start = time.perf_counter()
        faces = sum(pool.imap_unordered(_analyse_path, [(str(p), args.flags) for p in paths], chunksize=4))
        elapsed = time.perf_counter() - start
        machine_cpu = cpu_by_role({})["machine"] - machine_before
    return {
        "machine cpu seconds": machine_cpu,
        "images": len(paths),
        "faces": faces,
        "seconds": elapsed,
        "images/s": len(paths) / elapsed,
        "faces/s": faces / elapsed,
    }


def run_peer(paths: list[Path], args: argparse.Namespace, work: Path) -> dict:
    """ageitgey's `face_recognition` command; its model package is replaced by a stand-in pointing at our
    fetched, hash-checked copies of the same dlib files (tests/accuracy/peer.py does the same in-process)."""
    from workers.models.fetch import fetch_source

    stand_in = work / "standin" / "face_recognition_models"
    stand_in.mkdir(parents=True)
    models = {
        "pose_predictor_model_location": "shape_predictor_68",
        "pose_predictor_five_point_model_location": "shape_predictor_5",
        "face_recognition_model_location": "dlib_resnet",
        "cnn_face_detector_model_location": "mmod_detector",
    }
    (stand_in / "__init__.py").write_text(
        "".join(f"def {fn}():\n    return {str(fetch_source(name))!r}\n" for fn, name in models.items())
    )
    known, unknown = work / "known", work / "unknown"
    known.mkdir()
    unknown.mkdir()
    (known / "eileen.jpg").write_bytes(encode(astronaut()))
    for i, path in enumerate(paths):  # its folder scan wants .jpg/.jpeg/.png names in one folder
        (unknown / f"{i:05d}{path.suffix.lower() or '.jpg'}").symlink_to(path.resolve())
    command = Path(sys.executable).parent / "face_recognition"
    env = {**os.environ, "PYTHONPATH": str(work / "standin")}
    start = time.perf_counter()
    done = subprocess.run(
        [str(command), "--cpus", str(args.processes), str(known), str(unknown)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    faces = sum(not line.endswith(",no_persons_found") for line in lines)
    return {
        "images": len(paths),
        "faces": faces,
        "seconds": elapsed,
        "images/s": len(paths) / elapsed,
        "faces/s": faces / elapsed,
    }


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")
    except (OSError, subprocess.CalledProcessError):
        model = "?"
    return f"{model}, {os.cpu_count()} logical cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes (and pipeline/peer processes)"
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        help="service: worker processes, when not --processes (more than cores overlaps database waits)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="ingest: images in flight")
    parser.add_argument("--per-request", type=int, default=8, help="ingest: files sent in one request")
    parser.add_argument(
        "--flags", default="", help="detection_flags for every image ('' = the server default)"
    )
    parser.add_argument("--probe-every", type=float, default=3.0, help="seconds between interactive uploads")
    parser.add_argument(
        "--interactive-lane",
        action="store_true",
        help="service: also run a worker that takes interactive work only (compose's worker-interactive)",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the in-process pipeline phase")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition's CLI")
    parser.add_argument(
        "--peer-photos",
        type=int,
        help="run face_recognition's CLI on the first N photos only (its HOG pass is slow; the photos are "
        "interleaved, so a prefix mixes every set); its ratio is then against our rate on all photos",
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--profile", type=Path, help="sample api and workers with py-spy into this folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facequeue-ingest-bench-"))
    (work / "photos").mkdir()
    if SHARED_DATA.is_dir():
        paths = shared_photos(args.photos, work / "photos")
        source = "../shared/data (CACD, UTKFace, WIDER, misc interleaved; distinct by content, topped up)"
    else:
        paths = free_photos(args.photos, work / "photos")
        source = "variants of the free photos (tests/photos.py)"
    load = os.getloadavg()
    print(f"{len(paths)} photos from {source}; {args.processes} processes; flags {args.flags or '(default)'}")
    print(
        f"machine: {machine()}; load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}", flush=True
    )

    service = run_service(paths, args, work)
    if args.profile:
        for role in ("api", "workers"):
            print_profile(args.profile / f"{role}.txt")
    print(
        "service:",
        json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in service.items()}),
        flush=True,
    )
    pipeline = None if args.no_pipeline else run_pipeline(paths, args)
    if pipeline:
        print("pipeline:", json.dumps({k: round(v, 3) for k, v in pipeline.items()}), flush=True)
    peer = None if args.no_peer else run_peer(paths[: args.peer_photos or len(paths)], args, work)
    if peer:
        print("face_recognition CLI:", json.dumps({k: round(v, 3) for k, v in peer.items()}), flush=True)

    print(f"\n## Ingest ({datetime.date.today()}, {len(paths)} photos, {args.processes} processes)\n")
    print("| path | images/s | faces/s | faces | seconds |\n| --- | ---: | ---: | ---: | ---: |")
    rows = [("facequeue ingest → api → Redis → workers", service)]
    rows += [("in-process pipeline", pipeline)] if pipeline else []
    rows += [("face_recognition CLI", peer)] if peer else []
    for name, row in rows:
        print(
            f"| {name} | {row['images/s']:.2f} | {row['faces/s']:.2f} | {row['faces']} | {row['seconds']:.1f} |"
        )
    if pipeline:
        ratio = service["images/s"] / pipeline["images/s"]
        met = "met" if ratio >= 0.85 else "NOT met"
        print(f"\nservice / pipeline images/s: {ratio:.1%} (target ≥ 85 %: {met})")
    if peer:
        subset = f" (peer on the first {peer['images']} photos)" if peer["images"] < len(paths) else ""
        print(
            f"service / face_recognition CLI images/s: x{service['images/s'] / peer['images/s']:.1f}{subset}"
        )
    print(
        f"enqueue p50 {service['enqueue p50 ms']:.1f} ms, p99 {service['enqueue p99 ms']:.1f} ms "
        f"({service['enqueue n']} probe uploads without ?wait=, 2 a second, during the run)"
    )
    print(
        f"interactive time-to-done during the bulk run: p50 {service['interactive p50 s']:.2f} s, "
        f"p95 {service['interactive p95 s']:.2f} s (n={service['interactive n']}; target p95 < 2 s)"
    )
    print(f"ingest exit code {service['exit']}, batch counts {service['batch counts']}")


if __name__ == "__main__":
    main()
