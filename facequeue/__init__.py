"""facequeue: self-hosted face analysis service (queue-and-poll, Betaface-compatible)."""

__version__ = "0.1.0"
