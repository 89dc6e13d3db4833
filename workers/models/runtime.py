"""onnxruntime session factory: providers and threads come from the settings, nowhere else."""

from __future__ import annotations

from pathlib import Path

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
