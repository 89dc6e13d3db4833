"""The composed face pipeline: detect -> align -> embed -> age/gender, every stage one batch per image.

One FacePipeline per process (`get_pipeline(settings)`); sessions come from `workers.models.runtime`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from facequeue.settings import Settings, get_settings
from workers.models.fetch import model_path, optional_model_paths
from workers.models.registry import get_spec
from workers.models.runtime import create_session
from workers.models.yunet import Detections, YuNet
from workers.pipeline.align import align, eye_angle
from workers.pipeline.detect import FaceDetector
from workers.pipeline.points import basic_points
from workers.pipeline.types import FaceAnalysis, Tag
from workers.recognition.profiles import embedder_names


class Embedder(Protocol):
    model_id: str
    chip_size: int
    template: np.ndarray

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def int8_facenet_path(settings: Settings) -> Path:
    """Where the int8 FaceNet lives in the cache (made by `build_int8_facenet`)."""
    spec = get_spec("facenet")
    return settings.resolved_model_dir / spec.converted_file.replace(".onnx", ".int8.onnx")


def _load_embedder(
    name: str, settings: Settings, factory: Callable[[Path], ort.InferenceSession]
) -> Embedder:
    # Imported here: the embedder modules belong to the model wrappers and load only when a profile needs them.
    if name == "facenet":
        from workers.models.facenet import FaceNetEmbedder

        # Outside the default pack: fetched here on first use; NOT_AVAILABLE when no source has it.
        (path,) = optional_model_paths(["facenet"], "the facenet embedding profile", settings)
        if settings.int8_embeddings:
            path = int8_facenet_path(settings)
            if not path.is_file():
                raise FileNotFoundError(
                    f"int8 embeddings are on but {path} is missing; build it once with "
                    "workers.pipeline.analyse.build_int8_facenet(settings, photos)"
                )
        return FaceNetEmbedder.from_file(path, factory)
    if name == "sface":
        from workers.models.sface import SFaceEmbedder

        return SFaceEmbedder.from_file(model_path("sface", settings), factory)
    if name == "dlib_resnet":
        from workers.models.dlib_resnet import DlibResNetEmbedder

        return DlibResNetEmbedder.from_file(model_path("dlib_resnet", settings), factory)
    raise KeyError(f"no embedder {name!r}")


LIVENESS_RETRY_S = 300.0


class FacePipeline:
    def __init__(
        self,
        detector: FaceDetector,
        embedders: list[Embedder],
        age_gender_loader: Callable[[], Any] | None = None,
        dense_loader: Callable[[], Any] | None = None,
        liveness_loader: Callable[[], Any] | None = None,
        nsfw_loader: Callable[[], Any] | None = None,
    ) -> None:
        self.detector = detector
        self.embedders = embedders
        self._age_gender_loader = age_gender_loader
        self._dense_loader = dense_loader  # mesh + iris + emotion, loaded on first use
        self._dense: Any = None
        self._age_gender: Any = None
        self._liveness_loader = liveness_loader  # MiniFASNet pair, loaded on first `liveness` flag
        self._liveness: Any = None
        self._liveness_missing: tuple[float, Exception] | None = None  # (when, why) the models were missing
        self._nsfw_loader = nsfw_loader  # open_nsfw, fetched and loaded on the first `nsfw` flag
        self._nsfw: Any = None
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage, summed over calls

    @classmethod
    def from_settings(cls, settings: Settings) -> FacePipeline:
        def factory(model: Path | bytes) -> ort.InferenceSession:
            return create_session(model, settings)

        def mesh() -> Any:
            from workers.models.face_mesh import FaceMesh

            return FaceMesh.from_file(model_path("face_landmark", settings), factory)

        def onet() -> Any:
            from workers.models.onet import ONet

            return ONet.from_file(model_path("mtcnn_onet", settings), factory)

        detector = FaceDetector(
            factory(YuNet.dynamic_model_bytes(model_path("yunet", settings))),
            threshold=settings.detection_threshold,
            max_side=settings.detection_max_side,
            accurate_max_side=settings.detection_accurate_max_side,
            min_face_size=settings.min_face_size,
            mesh_loader=mesh if settings.nonface_check else None,
            min_face_score=settings.nonface_min_face_score,
            sure_score=settings.nonface_sure_score,
            sure_min_face_score=settings.nonface_sure_min_face_score,
            mode=settings.detection_mode,
            onet_loader=onet if settings.nonface_check else None,
            onet_min_prob=settings.nonface_onet_min_prob,
            onet_min_side=settings.nonface_onet_min_side,
        )
        names = embedder_names(settings.embedding_profile)
        embedders = [_load_embedder(name, settings, factory) for name in names]

        def age_gender() -> Any:
            from workers.models.age_gender import AgeGender

            return AgeGender.from_files(model_path("age", settings), model_path("gender", settings), factory)

        from workers.pipeline.attributes import load_dense_models

        def liveness() -> Any:
            from workers.models.fetch import optional_model_paths
            from workers.models.liveness import PassiveLiveness

            v2, v1se = optional_model_paths(["minifasnet_v2", "minifasnet_v1se"], "liveness", settings)
            return PassiveLiveness.from_files(v2, v1se, factory)

        def nsfw() -> Any:
            from workers.models.fetch import optional_model_paths
            from workers.models.nsfw import OpenNsfw

            (path,) = optional_model_paths(["open_nsfw"], "nsfw", settings)
            return OpenNsfw.from_file(path, factory)

        return cls(
            detector, embedders, age_gender, lambda: load_dense_models(settings, factory), liveness, nsfw
        )

    @property
    def age_gender(self) -> Any:
        if self._age_gender is None and self._age_gender_loader is not None:
            self._age_gender = self._age_gender_loader()
        return self._age_gender

    def _load_liveness(self) -> None:
        """Load the optional liveness models once; when they are missing, say so without re-trying every
        source on every job (again after LIVENESS_RETRY_S, so models supplied later are picked up)."""
        if self._liveness is not None:
            return
        if self._liveness_missing and time.monotonic() - self._liveness_missing[0] < LIVENESS_RETRY_S:
            raise self._liveness_missing[1]
        try:
            self._liveness = self._liveness_loader()
        except Exception as exc:
            self._liveness_missing = (time.monotonic(), exc)
            raise

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[stage] += time.perf_counter() - start

    def analyse(
        self, image: np.ndarray, flags: Iterable[str] = (), options: dict | None = None
    ) -> list[FaceAnalysis]:
        """Faces of one RGB uint8 (H, W, 3) image, best detection score first.

        options: upload options; `landmark_set` ("betaface" default, "facepp106", "facepp83", "azure27")
        names the dense point set (`workers.pipeline.landmark_sets`); `detection_mode` (fast, auto,
        accurate) overrides the setting (`workers.pipeline.detect`)."""
        flags = set(flags)
        with self._timed("detect"):
            detections = self.detector.detect(image, (options or {}).get("detection_mode"))
        return self.analyse_detections_many([image], [detections], flags, options)[0]

    def nsfw_scores(self, images: list[np.ndarray]) -> np.ndarray:
        """open_nsfw probability (0-1) of each whole RGB image, one batch."""
        if self._nsfw is None:
            if self._nsfw_loader is None:
                raise RuntimeError("this pipeline has no NSFW model")
            self._nsfw = self._nsfw_loader()
        with self._timed("nsfw"):
            return self._nsfw.predict(images)

    def analyse_detections(self, image: np.ndarray, det: Detections, flags: set[str]) -> list[FaceAnalysis]:
        """Everything after detection, all faces of the image in one batch per network."""
        return self.analyse_detections_many([image], [det], flags)[0]

    def analyse_many(
        self, images: list[np.ndarray], flags: Iterable[str] = (), options: dict | None = None
    ) -> list[list[FaceAnalysis]]:
        """Several images at once (micro-batching): images of the same detector input size are detected in
        one batch, and the faces of all images go through each network as one batch."""
        flags = set(flags)
        detections: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            groups[self.detector.input_size(image.shape)].append(i)
        with self._timed("detect"):
            for members in groups.values():
                found = self.detector.detect_batch(
                    [images[i] for i in members], (options or {}).get("detection_mode")
                )
                for i, det in zip(members, found, strict=True):
                    detections[i] = det
        return self.analyse_detections_many(images, [d for d in detections if d is not None], flags, options)

    def analyse_detections_many(
        self,
        images: list[np.ndarray],
        detections: list[Detections],
        flags: set[str],
        options: dict | None = None,
    ) -> list[list[FaceAnalysis]]:
        if "bestface" in flags:
            detections = [Detections(d.boxes[:1], d.scores[:1], d.landmarks[:1]) for d in detections]
        per_image = [
            [
                FaceAnalysis(
                    box=box,
                    score=float(score),
                    landmarks5=points,
                    angle=float(angle),
                    points=basic_points(points),
                )
                for box, score, points, angle in zip(
                    det.boxes, det.scores, det.landmarks, eye_angle(det.landmarks), strict=True
                )
            ]
            for det in detections
        ]
        faces = [face for image_faces in per_image for face in image_faces]
        if not faces:
            return per_image
        with_faces = [(image, det) for image, det in zip(images, detections, strict=True) if len(det)]

        def chips(template: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
            with self._timed("align"):
                return np.concatenate(
                    [align(image, det.landmarks, template, size, antialias) for image, det in with_faces]
                )

        for embedder in self.embedders:
            batch = chips(embedder.template, embedder.chip_size, getattr(embedder, "antialias", True))
            with self._timed(f"embed {embedder.model_id}"):
                vectors = _l2_normalize(embedder.embed(batch))
            for face, vector in zip(faces, vectors, strict=True):
                face.embeddings[embedder.model_id] = vector
        if "classifiers" in flags and self.age_gender is not None:
            model = self.age_gender
            age_chips = chips(model.age_template, model.age_size)
            gender_chips = chips(model.gender_template, model.gender_size)
            with self._timed("age_gender"):
                ages, age_conf = model.predict_age(age_chips)
                genders, gender_conf = model.predict_gender(gender_chips)
            for face, age, ac, gender, gc in zip(faces, ages, age_conf, genders, gender_conf, strict=True):
                face.tags.append(Tag("age", str(round(float(age))), round(float(ac), 3)))
                face.tags.append(Tag("gender", gender, round(float(gc), 3)))
        if flags & {"propoints", "classifiers", "extended"} and self._dense_loader is not None:
            from workers.pipeline.attributes import annotate_faces

            if self._dense is None:
                self._dense = self._dense_loader()
            with self._timed("landmarks_attributes"):
                for image, det, image_faces in zip(images, detections, per_image, strict=True):
                    if image_faces:
                        annotate_faces(
                            self._dense,
                            image,
                            det.boxes,
                            det.landmarks,
                            image_faces,
                            flags,
                            landmark_set=(options or {}).get("landmark_set", "betaface"),
                            scores=det.scores,
                        )
        if "liveness" in flags and self._liveness_loader is not None:
            self._load_liveness()
            with self._timed("liveness"):
                for image, det, image_faces in zip(images, detections, per_image, strict=True):
                    if image_faces:
                        for face, real in zip(
                            image_faces, self._liveness.predict(image, det.boxes), strict=True
                        ):
                            # Threshold 0.5 on the averaged real-class softmax, as upstream and the liveness API.
                            face.tags.append(
                                Tag("liveness", "real" if real >= 0.5 else "spoof", round(float(real), 3))
                            )
        return per_image


_pipelines: dict[str, FacePipeline] = {}
_lock = threading.Lock()


def get_pipeline(settings: Settings | None = None) -> FacePipeline:
    """The process-wide pipeline for these settings (built once: sessions are expensive)."""
    settings = settings if settings is not None else get_settings()
    key = settings.model_dump_json(
        include={"model_dir", "home", "embedding_profile", "int8_embeddings", "providers", "intra_op_threads"}
        | {"min_face_size", "detection_threshold", "detection_max_side", "detection_accurate_max_side"}
        | {
            "detection_mode",
            "nonface_check",
            "nonface_min_face_score",
            "nonface_sure_score",
            "nonface_sure_min_face_score",
            "nonface_onet_min_prob",
            "nonface_onet_min_side",
        }
    )
    with _lock:
        if key not in _pipelines:
            _pipelines[key] = FacePipeline.from_settings(settings)
        return _pipelines[key]


def build_int8_facenet(settings: Settings, photos: Iterable[np.ndarray], max_chips: int = 64) -> Path:
    """Quantise FaceNet to int8, calibrated on aligned chips of real faces found in `photos` (RGB arrays).

    Static quantisation needs real activations; the model pack ships no photos, so the caller names them
    (e.g. `facequeue models fetch --int8-calibration DIR`).
    """
    from workers.models.facenet import FaceNetEmbedder, quantize_int8

    dst = int8_facenet_path(settings)
    factory = lambda model: create_session(model, settings)  # noqa: E731
    detector = YuNet(factory(YuNet.dynamic_model_bytes(model_path("yunet", settings))))
    chips = []
    for image in photos:
        det = detector.detect(image)
        if len(det):
            chips.append(align(image, det.landmarks, FaceNetEmbedder.template, FaceNetEmbedder.chip_size))
        if sum(len(c) for c in chips) >= max_chips:
            break
    if not chips:
        raise ValueError("no face found in the calibration photos")
    tmp = dst.with_name(f".{dst.name}.tmp")
    quantize_int8(model_path("facenet", settings), tmp, np.concatenate(chips)[:max_chips])
    tmp.replace(dst)
    return dst
