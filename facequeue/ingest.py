"""`facequeue ingest` and `facequeue export`: a photo archive through the client, resumably.

Sources are expanded lazily (a two-million-photo folder is never listed in memory); a SQLite state file
keyed by content SHA-256 (+ flags and options) records every finished item, so a rerun after Ctrl-C or
a crash skips what is done, and the server's own dedupe (same bytes + flags + options per tenant = one
job) makes the few items in flight at the kill come back as the same jobs, never as new ones.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from facequeue.client import Client, FacequeueAPIError, IngestItem, IngestResult, Prepared, is_url

# Exit codes of `facequeue ingest` (README lists them).
EXIT_OK = 0  # every item finished without error
EXIT_ITEM_ERRORS = 1  # the run finished, but one or more items ended in error (see the summary / --out)
EXIT_USAGE = 2  # bad arguments (argparse)
EXIT_SERVER = 3  # the server could not be reached or refused the api key
EXIT_INTERRUPTED = 130  # Ctrl-C; rerun the same command to resume

# Magic numbers of the formats the server accepts: files are recognised by content, not by extension.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def looks_like_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _walk(root: Path) -> Iterator[Path]:
    """Every image file under root, in a stable (sorted) order, lazily."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if looks_like_image(path):
                yield path


def person_name(folder: str) -> str:
    """root/<person name>/photo.jpg: underscores in folder names stand for spaces (George_W_Bush)."""
    return folder.replace("_", " ").strip()


def _manifest_entries(stream: IO[str], kind: str) -> Iterator[str]:
    """Paths or URLs from a text (one a line), CSV (column source/path/url, else the first) or JSONL
    (objects with source/path/url, or strings) manifest."""
    if kind == "csv":
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            return
        lowered = [h.strip().lower() for h in header]
        column = next((lowered.index(c) for c in ("source", "path", "url") if c in lowered), None)
        if column is None:  # no header row: the first column of every row
            column = 0
            reader = iter([header, *reader])
        for row in reader:
            if len(row) > column and row[column].strip():
                yield row[column].strip()
        return
    for line in stream:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if kind == "jsonl":
            try:
                value = json.loads(line)
            except json.JSONDecodeError:  # reported as an unreadable source, the run goes on
                value = line
            if isinstance(value, dict):
                value = value.get("source") or value.get("path") or value.get("url")
            if value:
                yield str(value)
        else:
            yield line


def _manifest_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "csv" if suffix == ".csv" else "jsonl" if suffix in (".jsonl", ".ndjson") else "text"


def _from_manifest(entries: Iterator[str], base: Path) -> Iterator[IngestItem]:
    for entry in entries:
        if is_url(entry):
            yield IngestItem(entry)
        else:
            path = Path(entry)
            yield IngestItem(path if path.is_absolute() else base / path, name=entry)


def iter_sources(
    sources: list[str], person_from_folder: bool = False, namespace: str = "", stdin: IO[str] | None = None
) -> Iterator[IngestItem]:
    """Expand SOURCE arguments: folder (recursive), image file, manifest (text/CSV/JSONL), glob, '-', URL."""
    for source in sources:
        if source == "-":
            yield from _from_manifest(_manifest_entries(stdin or sys.stdin, "text"), Path.cwd())
            continue
        if is_url(source):
            yield IngestItem(source)
            continue
        path = Path(source)
        if path.is_dir():
            for photo in _walk(path):
                item = IngestItem(photo)
                if person_from_folder:
                    relative = photo.relative_to(path).parts
                    if len(relative) < 2:  # a photo directly under the root names nobody: reported, not sent
                        message = "--person-from-folder needs root/<person>/photo; this photo is in the root"
                        item.error = {"code": "NO_PERSON_FOLDER", "message": message}
                    else:
                        item.options["set_person_id"] = f"{person_name(relative[0])}@{namespace}"
                yield item
        elif path.is_file():
            if looks_like_image(path):
                yield IngestItem(path)
            else:
                with path.open(encoding="utf-8") as stream:
                    yield from _from_manifest(_manifest_entries(stream, _manifest_kind(path)), path.parent)
        else:
            matches = sorted(glob.glob(source, recursive=True))
            if not matches:
                yield IngestItem(path)  # reported as UNREADABLE, not silently dropped
            for match in matches:
                if Path(match).is_file() and looks_like_image(Path(match)):
                    yield IngestItem(Path(match))


class State:
    """The resume file: one row per source; `content_key` = sha256 (or URL) + flags + options digest.

    Thread-safe (the client's pool threads ask `skip` and report uploads)."""

    def __init__(self, path: Path, flags: str | None, options: dict) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a crash of this process
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT UNIQUE,"
            " content_key TEXT, media_uuid TEXT, status TEXT, result TEXT, stat TEXT)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS ix_items_key ON items (content_key, status)")
        self.flags, self.options = flags, options
        self.closed = False

    def close(self) -> None:
        """Ctrl-C: every record so far is committed; close the file. Pool threads still running report
        nothing more (their items are redone on the rerun, and the server's dedupe gives the same jobs)."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.db.close()

    def key(self, prepared: Prepared) -> str:
        return f"{prepared.sha256 or 'url:' + str(prepared.url)}:{self._digest(prepared.item)}"

    def _digest(self, item: IngestItem) -> str:
        options = {**self.options, **item.options}
        return hashlib.sha256(json.dumps([self.flags, options], sort_keys=True).encode()).hexdigest()[:16]

    @staticmethod
    def _stat(item: IngestItem) -> str | None:
        """Size and modification time of a file source: unchanged since it was done = done, unread."""
        if isinstance(item.source, bytes) or is_url(item.source):
            return None
        try:
            st = os.stat(item.source)
        except OSError:
            return None
        return f"{st.st_size}:{st.st_mtime_ns}"

    def quick_skip(self, item: IngestItem) -> IngestResult | None:
        """A file this very source path finished with the same flags and options, unchanged since: skipped
        without reading it (a rerun over millions of done photos does not read them all again)."""
        stat = self._stat(item)
        if stat is None:
            return None
        name = item.name or str(item.source)
        with self.lock:
            if self.closed:
                return None
            row = self.db.execute(
                "SELECT result FROM items WHERE source = ? AND status = 'done' AND stat = ?"
                " AND content_key LIKE ?",
                (name, stat, f"%:{self._digest(item)}"),
            ).fetchone()
        if row is None:
            return None
        result = IngestResult(**json.loads(row[0]))
        result.status = "skipped"
        return result

    def skip(self, prepared: Prepared) -> IngestResult | None:
        """A result recorded done by an earlier run (for this source, or the same content elsewhere)."""
        with self.lock:
            if self.closed:
                return None
            row = self.db.execute(
                "SELECT result FROM items WHERE content_key = ? AND status = 'done' LIMIT 1",
                (self.key(prepared),),
            ).fetchone()
            if row is None:
                return None
            result = IngestResult(**{**json.loads(row[0]), "source": prepared.name})
            self._put(prepared.name, self.key(prepared), result, self._stat(prepared.item))
        result.status = "skipped"
        return result

    def uploaded(self, prepared: Prepared, media_uuid: str) -> None:
        with self.lock:
            if self.closed:
                return
            self.db.execute(
                "INSERT INTO items (source, content_key, media_uuid, status, stat)"
                " VALUES (?, ?, ?, 'uploaded', ?) ON CONFLICT (source) DO UPDATE SET"
                " content_key = excluded.content_key, media_uuid = excluded.media_uuid, status = 'uploaded',"
                " stat = excluded.stat",
                (prepared.name, self.key(prepared), media_uuid, self._stat(prepared.item)),
            )

    def record(self, result: IngestResult) -> None:
        """A finished item; its content key was written when it was uploaded (none if it never was)."""
        with self.lock:
            if not self.closed:
                self._put(result.source, None, result)

    def _put(self, source: str, key: str | None, result: IngestResult, stat: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO items (source, content_key, media_uuid, status, result, stat) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (source) DO UPDATE SET content_key = COALESCE(excluded.content_key, content_key),"
            " media_uuid = excluded.media_uuid, status = excluded.status, result = excluded.result,"
            " stat = COALESCE(excluded.stat, stat)",
            (source, key, result.media_uuid, result.status, json.dumps(result.to_json()), stat),
        )

    def results(self) -> Iterator[dict]:
        with self.lock:
            rows = self.db.execute(
                "SELECT result FROM items WHERE result IS NOT NULL ORDER BY seq"
            ).fetchall()
        for (text,) in rows:
            yield json.loads(text)


def _rewrite(out: Path, state: State) -> None:
    """The final --out: exactly one line per source, from the state file (atomic replace)."""
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for line in state.results():
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(out)


def summary_table(counts: Counter[str], faces: int, elapsed: float, fresh: int) -> str:
    total = sum(counts.values())
    lines = [
        f"ingest: {total} sources in {elapsed:.1f} s; {fresh} processed now "
        f"({fresh / elapsed if elapsed else 0:.2f} images/s, {faces / elapsed if elapsed else 0:.2f} faces/s)",
        f"  {'outcome':<28}{'count':>8}",
    ]
    order = ["done", "skipped"]
    for outcome in order + sorted(k for k in counts if k not in order):
        if counts.get(outcome):
            label = "skipped (done before)" if outcome == "skipped" else outcome
            lines.append(f"  {label:<28}{counts[outcome]:>8}")
    return "\n".join(lines)


def _count_sources(args: Any, bar: Any) -> None:
    """Second lazy pass that only counts, so the bar gets a total (and an ETA) without holding the list."""
    count = sum(1 for _ in iter_sources(args.sources, args.person_from_folder, args.namespace))
    bar.total = count
    bar.refresh()


class _Interrupts:
    """SIGINT for the length of a run: KeyboardInterrupt wherever the main thread is, except while a
    finished item is being written (then it comes right after that item is recorded in full).

    Installed whatever disposition was inherited: a parent that ignores SIGINT (a shell's `cmd &` without
    job control, a test runner started so) would otherwise make `kill -INT` a no-op that runs the whole
    archive to the end and exits 0."""

    def __init__(self) -> None:
        self.shielded = False
        self.pending = False

    def handler(self, _signum: int, _frame: object) -> None:
        if self.shielded:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _exit_now(_signum: int, _frame: object) -> None:
    """A second Ctrl-C while the first one is being handled: out at once (every record is committed)."""
    os._exit(EXIT_INTERRUPTED)


def run_ingest(args: Any, client: Client | None = None) -> int:
    """Returns the exit code. On Ctrl-C (SIGINT) it stops submitting, keeps the state file, prints the
    summary and returns EXIT_INTERRUPTED; pool threads may still be waiting on jobs then (the CLI exits
    without them)."""
    interrupts = _Interrupts()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupts.handler) if main else None
    try:
        return _run_ingest(args, client, interrupts)
    finally:
        if main:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _run_ingest(args: Any, client: Client | None, interrupts: _Interrupts) -> int:
    from tqdm import tqdm

    flags = args.flags
    options: dict[str, Any] = {"batch": args.batch} if args.batch else {}
    if args.person_from_folder:
        flags = ",".join(sorted({"bestface", *(f for f in (flags or "").replace(" ", ",").split(",") if f)}))
    out = Path(args.out) if args.out else None
    state_path = (
        Path(args.state) if args.state else (out.with_name(out.name + ".state.sqlite") if out else None)
    )
    state_path = state_path or Path("facequeue-ingest.state.sqlite")
    counts: Counter[str] = Counter()
    faces = fresh = 0
    started = time.monotonic()
    state: State | None = None
    appended: IO[str] | None = None
    bar: Any = None
    try:
        client = client or Client(args.url, args.api_key)
        try:  # one cheap authenticated call: a wrong URL or key stops here, not as a million item errors
            client.request("GET", "/v2/person", params={"person_id": "all@"})
        except FacequeueAPIError as exc:
            print(f"facequeue ingest: the server refused the request: {exc}", file=sys.stderr)
            return EXIT_SERVER
        except Exception as exc:
            print(f"facequeue ingest: cannot reach {client.base_url}: {exc}", file=sys.stderr)
            return EXIT_SERVER

        state = State(state_path, flags, options)
        appended = out.open("a", encoding="utf-8") if out else None
        bar = tqdm(
            unit=" images",
            # Always images/s (tqdm would switch to s/image below 1/s), then our faces/s, faces and errors.
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
            dynamic_ncols=True,
            smoothing=0.05,
            file=sys.stderr,
            disable=args.quiet,
        )
        if "-" not in args.sources:
            threading.Thread(target=_count_sources, args=(args, bar), daemon=True).start()
        items = iter_sources(args.sources, args.person_from_folder, args.namespace)
        results = client.ingest(
            items,
            flags,
            concurrency=args.concurrency,
            per_request=args.per_request,
            timeout=args.timeout,
            skip=state.skip,
            on_uploaded=state.uploaded,
            quick_skip=state.quick_skip,
            **options,
        )
        try:
            for result in results:
                with interrupts.recording():  # a result is recorded whole, in the state file and --out
                    if result.status != "skipped":
                        state.record(result)
                        if appended:
                            appended.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                            appended.flush()
                        if result.status == "done":
                            fresh += 1
                            faces += len(result.faces)
                    error = result.error if result.status == "error" else None
                    counts[error["code"] if error else result.status] += 1
                errors = sum(v for k, v in counts.items() if k not in ("done", "skipped"))
                elapsed = max(1e-9, time.monotonic() - started)
                bar.set_postfix_str(
                    f"{faces / elapsed:.1f} faces/s, {faces} faces, {errors} errors", refresh=False
                )
                bar.update(1)
        finally:  # stop submitting: what has not started is dropped (the client's pool shuts down)
            results.close()
        bar.close()
        if appended:
            appended.close()
        if out:
            _rewrite(out, state)
        print(summary_table(counts, faces, time.monotonic() - started, fresh), file=sys.stderr)
        failed = sum(v for k, v in counts.items() if k not in ("done", "skipped"))
        if failed:
            where = f"; each error is in {out}" if out else ""
            print(f"exit {EXIT_ITEM_ERRORS}: {failed} item(s) ended in error{where}", file=sys.stderr)
            return EXIT_ITEM_ERRORS
        return EXIT_OK
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _exit_now)
        if bar is not None:
            bar.close()
        if appended:
            appended.close()
        if state is None:
            print("interrupted before anything was sent", file=sys.stderr)
            return EXIT_INTERRUPTED
        state.close()
        print(summary_table(counts, faces, time.monotonic() - started, fresh), file=sys.stderr)
        print(
            f"interrupted: {sum(counts.values())} finished are recorded in {state_path};"
            " run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def run_export(args: Any, client: Client | None = None) -> int:
    client = client or Client(args.url, args.api_key)
    if args.batch:
        rows = client.batch_results(args.batch, embeddings=args.embeddings)
    else:
        rows = client.namespace_faces(args.namespace, embeddings=args.embeddings)
    count = 0
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext(sys.stdout) as stream:
        try:
            for row in rows:  # streamed page by page, never held whole
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        except FacequeueAPIError as exc:
            print(f"facequeue export: {exc}", file=sys.stderr)
            return EXIT_SERVER
    print(f"exported {count} {'media' if args.batch else 'faces'}", file=sys.stderr)
    return EXIT_OK
