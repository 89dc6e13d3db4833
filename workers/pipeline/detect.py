"""Face detection as the pipeline runs it: YuNet, an adaptive second pass for small faces, and a second look
that rejects non-faces.

Modes (upload option `detection_mode`, default `FACEQUEUE_DETECTION_MODE`):
- `fast`: one YuNet pass at `detection_max_side` (640) long side.
- `auto` (default): the fast pass; when the image is larger than that and the pass saw a small face
  candidate (any box, even below the threshold, under SMALL_CANDIDATE_PX pixels at the network's scale)
  or no candidate at all (faces too small to show), a second pass at `detection_accurate_max_side`
  (1280) is merged in (NMS). Images with a face of ordinary size, the common case, cost one pass.
- `accurate`: both passes on every image larger than `detection_max_side`.

Second look (`FACEQUEUE_NONFACE_CHECK`, on by default), two networks:
- Human-face check: every detection whose box has a short side of at least `nonface_onet_min_side` (80)
  pixels, confident ones too, is cut out square at 1.0 and 1.1 times its longer side, each crop also
  mirrored, and MTCNN's O-Net (a 48x48 face/non-face classifier) rates the four; the detection is dropped
  when their mean face probability is below `nonface_onet_min_prob` (0.25). On WIDER 1 of 1547 confident
  real faces (431 of them >= 80 px) scores below, and no 0.6-0.75 one; the frontal puppy that YuNet scores
  0.85 gets at most 0.16 (as it is, mirrored, x0.3 to x3, cut to its head): tools/onet_check.py. Smaller
  boxes are not checked: O-Net rates small real faces low (0.5 % quantile 0.006 below 20 px, 0.09 at
  20-40 px); checking from 48 px on would lose 3 confident and 6 of the 136 0.6-0.75 WIDER faces instead
  of 1 and 0. So the puppy shrunk to a 74 px face (x0.25) is still reported, and a dog face framed
  otherwise than YuNet frames this one may pass (O-Net rates 11 of 27 shifted and scaled boxes on the
  puppy's face 0.25-0.76; it was trained on human faces against background, not against animals). Without
  the O-Net file (no source could provide it) this check is skipped with a warning, retried every
  ONET_RETRY_S seconds; detection still works.
- Mesh check: a detection scoring below `nonface_sure_score` is cut out as the face-mesh crop and kept
  only when the mesh network's face-presence output (MediaPipe's face flag) reaches
  `nonface_min_face_score`. The mesh misses many real profile and occluded faces, so a confident detection
  is second-guessed only against a far lower floor, `nonface_sure_min_face_score` (0 = never, the
  default): 5e-5 loses 0.3 % of the confident real faces on WIDER but catches only some cat and quokka
  faces, and no dog face: the mesh scores a frontal puppy face as high as a human one (0.9-1.0); the O-Net
  check is what rejects it.
Figures: benchmarks/RESULTS.md, tests/accuracy/test_detection.py and tests/unit/test_detect.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import onnxruntime as ort

from schema.flags import DETECTION_MODES
from workers.models.face_mesh import FaceMesh, face_rois, warp_crops
from workers.models.fetch import ModelFetchError
from workers.models.onet import ONet, crop_chips
from workers.models.yunet import Detections, YuNet, nms

DetectionMode = Literal["fast", "auto", "accurate"]
SMALL_CANDIDATE_PX = 16  # shorter box side at the fast pass's scale (network pixels) that asks for pass 2
CANDIDATE_THRESHOLD = 0.3  # candidates the trigger looks at (below the reporting threshold too)
MESH_ROI_SCALE = 1.4  # as workers.pipeline.landmarks.FACE_ROI_SCALE: the crop the dense stage cuts
# O-Net crop sides (x the box's longer side); each crop is also looked at mirrored. One crop's score moves
# a lot on a non-face (the puppy: 0.16 as cut, 0.006 mirrored); the mean of four is steadier.
ONET_SCALES = (1.0, 1.1)
ONET_RETRY_S = 300.0  # how long a missing O-Net file is not asked for again

log = logging.getLogger(__name__)


def _select(det: Detections, keep: np.ndarray) -> Detections:
    return Detections(det.boxes[keep], det.scores[keep], det.landmarks[keep])


def _short_sides(boxes: np.ndarray) -> np.ndarray:
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


class FaceDetector:
    """Detects faces in RGB uint8 images; `detect_batch` runs one network batch per pass."""

    def __init__(
        self,
        session: ort.InferenceSession,
        threshold: float = 0.6,
        max_side: int = 640,
        accurate_max_side: int = 1280,
        min_face_size: float = 0.0,
        mesh_loader: Callable[[], FaceMesh] | None = None,
        min_face_score: float = 0.05,
        sure_score: float = 0.75,
        sure_min_face_score: float = 0.0,
        mode: DetectionMode = "auto",
        onet_loader: Callable[[], ONet] | None = None,
        onet_min_prob: float = 0.25,
        onet_min_side: float = 80.0,
    ) -> None:
        # YuNet (dynamic graph, `YuNet.dynamic_model_bytes`) decodes down to the candidate threshold; the
        # reporting threshold and the size filter are applied here, after the passes are merged.
        self.yunet = YuNet(session, score_threshold=min(threshold, CANDIDATE_THRESHOLD), max_side=max_side)
        self.threshold = threshold
        self.max_side = max_side
        self.accurate_max_side = max(accurate_max_side, max_side)
        self.min_face_size = min_face_size
        self._mesh_loader = mesh_loader  # None = no second look
        self._mesh: FaceMesh | None = None
        self.min_face_score = min_face_score
        self.sure_score = sure_score
        self.sure_min_face_score = sure_min_face_score
        self.mode = mode
        self._onet_loader = onet_loader if onet_min_prob > 0 else None  # None = no human-face check
        self._onet: ONet | None = None
        self._onet_missing_at: float | None = None  # when the O-Net file was last found missing
        self.onet_min_prob = onet_min_prob
        self.onet_min_side = onet_min_side
        self.second_passes = 0  # images that needed the high-resolution pass (for benchmarks)
        self.rejected = 0  # detections the second look dropped (both checks)
        self.rejected_by_onet = 0  # of those, by the human-face check

    def input_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return self.yunet.input_size(shape)

    def detect(self, image: np.ndarray, mode: DetectionMode | None = None) -> Detections:
        return self.detect_batch([image], mode)[0]

    def detect_batch(self, images: list[np.ndarray], mode: DetectionMode | None = None) -> list[Detections]:
        mode = mode or self.mode
        if mode not in DETECTION_MODES:
            raise ValueError(f"detection_mode must be one of {', '.join(DETECTION_MODES)}, not {mode!r}")
        found = self.yunet.detect_batch(images)
        for i, (image, det) in enumerate(zip(images, found, strict=True)):
            if self._wants_second_pass(image, det, mode):
                self.second_passes += 1
                found[i] = self._merge(det, self.yunet.detect_batch([image], self.accurate_max_side)[0])
        found = [self._final(det) for det in found]
        if self._onet_loader is not None:
            found = self._human_look(images, found)
        if self._mesh_loader is not None:
            found = self._second_look(images, found)
        return found

    def _wants_second_pass(self, image: np.ndarray, det: Detections, mode: str) -> bool:
        long_side = max(image.shape[:2])
        if mode == "fast" or long_side <= self.max_side:
            return False
        if mode == "accurate":
            return True
        if not len(det):
            return True
        return bool(_short_sides(det.boxes).min() * self.max_side / long_side < SMALL_CANDIDATE_PX)

    def _merge(self, a: Detections, b: Detections) -> Detections:
        boxes = np.concatenate([a.boxes, b.boxes])
        scores = np.concatenate([a.scores, b.scores])
        landmarks = np.concatenate([a.landmarks, b.landmarks])
        keep = nms(boxes, scores, self.yunet.nms_threshold) if len(scores) else np.zeros(0, np.int64)
        return Detections(boxes[keep], scores[keep], landmarks[keep])

    def _final(self, det: Detections) -> Detections:
        keep = det.scores >= self.threshold
        if self.min_face_size > 0:
            keep &= _short_sides(det.boxes) >= self.min_face_size
        return _select(det, keep)

    def load(self) -> None:
        """Load the second-look networks now (otherwise loaded on the first detection that needs them)."""
        if self._mesh is None and self._mesh_loader is not None:
            self._mesh = self._mesh_loader()
        self._load_onet()

    def _load_onet(self) -> ONet | None:
        """O-Net, or None when this detector has none or its file could not be fetched (then the check is
        skipped, asked for again after ONET_RETRY_S: the rest of detection must keep working)."""
        if self._onet is not None or self._onet_loader is None:
            return self._onet
        if self._onet_missing_at is not None and time.monotonic() - self._onet_missing_at < ONET_RETRY_S:
            return None
        try:
            self._onet = self._onet_loader()
        except ModelFetchError as error:
            self._onet_missing_at = time.monotonic()
            log.warning("human-face check (MTCNN O-Net) skipped: %s", error)
        return self._onet

    def human_scores(self, images: list[np.ndarray], found: list[Detections]) -> list[np.ndarray]:
        """O-Net's face probability of each detection (mean over ONET_SCALES crops and their mirror
        images), all images' detections in one network batch; raises when O-Net is unavailable."""
        onet = self._load_onet()
        if onet is None:
            raise RuntimeError("this detector has no human-face check network (O-Net)")
        chips = [
            crop_chips(image, det.boxes, ONet.chip_size, ONET_SCALES)
            for image, det in zip(images, found, strict=True)
        ]
        batch = np.concatenate(chips) if chips else np.zeros((0, ONet.chip_size, ONet.chip_size, 3), np.uint8)
        if not len(batch):
            return [np.zeros(0, np.float32) for _ in found]
        prob = onet.face_probability(np.concatenate([batch, batch[:, :, ::-1]]))
        prob = (prob[: len(batch)] + prob[len(batch) :]) / 2
        out, start = [], 0
        for det in found:
            end = start + len(ONET_SCALES) * len(det)
            out.append(prob[start:end].reshape(len(ONET_SCALES), len(det)).mean(0))
            start = end
        return out

    def _human_look(self, images: list[np.ndarray], found: list[Detections]) -> list[Detections]:
        looked = [np.nonzero(_short_sides(det.boxes) >= self.onet_min_side)[0] for det in found]
        if not any(idx.size for idx in looked) or self._load_onet() is None:
            return found
        scores = self.human_scores(
            images, [_select(det, idx) for det, idx in zip(found, looked, strict=True)]
        )
        out = []
        for det, idx, score in zip(found, looked, scores, strict=True):
            keep = np.ones(len(det), bool)
            keep[idx[score < self.onet_min_prob]] = False
            self.rejected += int((~keep).sum())
            self.rejected_by_onet += int((~keep).sum())
            out.append(_select(det, keep))
        return out

    def face_scores(self, image: np.ndarray, det: Detections) -> np.ndarray:
        """The mesh network's face-presence score (0-1) of each detection's crop."""
        if not len(det):
            return np.zeros(0, np.float32)
        self.load()
        if self._mesh is None:
            raise RuntimeError("this detector has no second-look network")
        rois = face_rois(det.boxes, det.landmarks[:, :2], scale=MESH_ROI_SCALE)
        return self._mesh.predict(warp_crops(image, rois, FaceMesh.input_size))[1]

    def _second_look(self, images: list[np.ndarray], found: list[Detections]) -> list[Detections]:
        out = []
        for image, det in zip(images, found, strict=True):
            sure = det.scores >= self.sure_score
            floor = np.where(sure, self.sure_min_face_score, self.min_face_score)
            looked = np.nonzero(floor > 0)[0]  # a zero floor keeps the detection unseen (no mesh cost)
            if looked.size == 0:
                out.append(det)
                continue
            # All of an image's looked-at detections go through the mesh in one batch.
            scores = self.face_scores(image, _select(det, looked))
            keep = np.ones(len(det), bool)
            keep[looked[scores < floor[looked]]] = False
            self.rejected += int((~keep).sum())
            out.append(_select(det, keep))
        return out
