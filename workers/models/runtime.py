"""onnxruntime session factory: providers and threads come from the settings, nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np
import onnxruntime as ort

from facequeue.settings import Settings, get_settings


def available_providers(settings: Settings | None = None) -> list[str]:
    """The providers named in settings (in that order) that this onnxruntime build has; CPU always last."""
    settings = settings if settings is not None else get_settings()
    have = set(ort.get_available_providers())
    wanted = [p.strip() for p in settings.providers.split(",") if p.strip()]
    chosen = [p for p in wanted if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def create_session(
    model: str | Path | bytes, settings: Settings | None = None, providers: list[str] | None = None
) -> ort.InferenceSession:
    """An InferenceSession for an ONNX file (or serialized model bytes)."""
    settings = settings if settings is not None else get_settings()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads > 0:
        options.intra_op_num_threads = settings.intra_op_threads
        # One worker process per core set: inter-op parallelism only adds contention on these small graphs.
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; CUDA-missing warnings are expected on CPU boxes
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source, sess_options=options, providers=providers or available_providers(settings)
    )


class OnnxModel:
    """One ONNX graph behind an onnxruntime session, fed through its first input and read from its first
    output. Subclasses check that the graph is theirs and add the batched inference method."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    @classmethod
    def from_file(
        cls, path: str | Path, session_factory: Callable[[Path], ort.InferenceSession] | None = None
    ) -> Self:
        factory = session_factory if session_factory is not None else create_session
        return cls(factory(Path(path)))


def check_chips(chips: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """`chips` as an (N, size, size, channels) uint8 array, or ValueError; channels 3 is RGB.

    channels=1 is grey: (N, size, size) or (N, size, size, 1) in, (N, size, size) out.
    """
    chips = np.asarray(chips)
    if channels == 1:
        if chips.ndim == 4 and chips.shape[3] == 1:
            chips = chips[..., 0]
        want, kind = (size, size), "grey"
    else:
        want, kind = (size, size, channels), "RGB"
    if chips.ndim != len(want) + 1 or chips.shape[1:] != want or chips.dtype != np.uint8:
        dims = ", ".join(str(d) for d in want)
        raise ValueError(f"expected (N, {dims}) uint8 {kind} chips, got {chips.shape} {chips.dtype}")
    return chips
