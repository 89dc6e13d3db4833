"""Betaface detection_flags: any delimiter, or none ("propointsclassifiers" works); empty = the default set."""

from __future__ import annotations

KNOWN_FLAGS = ("bestface", "propoints", "classifiers", "extended", "liveness")
DEFAULT_FLAGS = frozenset({"propoints", "classifiers"})
# Named point sets a client may ask for with the upload option `landmark_set`.
LANDMARK_SETS = ("betaface", "facepp106", "azure27")


def parse_flags(raw: str | None) -> frozenset[str]:
    text = (raw or "").lower()
    flags = frozenset(flag for flag in KNOWN_FLAGS if flag in text)
    # "bestface" alone still means the default analysis, restricted to the best face.
    return flags | DEFAULT_FLAGS if flags <= {"bestface"} else flags


def normalise_flags(raw: str | None) -> str:
    """Canonical text form, stored on the job and used in the dedupe key."""
    return ",".join(sorted(parse_flags(raw)))
