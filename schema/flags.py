"""Betaface detection_flags: words joined by any delimiter, or none at all ("propointsclassifiers").

Betaface's semantics: an empty string means `propoints,classifiers`; a non-empty string replaces that
default. Every face always gets its box, score, the 5 basic points and its embedding; the flags add work:

- `basic`: nothing more (every face, recognition only, as fast as possible);
- `bestface`: only the face with the highest detection score;
- `propoints`: the dense named points; `classifiers`: the classifier tags;
- `extended`: colours and measurements (and, as on Betaface, the pro points);
- `liveness`: the passive liveness tag;
- `nsfw`: the image-level NSFW score (open_nsfw), not per face.

An unknown word is an error that lists the known ones, never a silent default.
"""

from __future__ import annotations

import re
from functools import cache

from schema.errors import ErrorCode, FacequeueError

KNOWN_FLAGS = ("basic", "bestface", "propoints", "classifiers", "extended", "liveness", "nsfw")
DEFAULT_FLAGS = frozenset({"propoints", "classifiers"})
# Named point sets a client may ask for with the upload option `landmark_set`.
LANDMARK_SETS = ("betaface", "facepp106", "facepp83", "azure27")
# Upload option `detection_mode` (workers/pipeline/detect.py).
DETECTION_MODES = ("fast", "auto", "accurate")


@cache
def _split_joined(word: str) -> tuple[str, ...] | None:
    """`word` as a concatenation of known flags ("bestfacepropoints"), or None when it is not one."""
    if not word:
        return ()
    for flag in KNOWN_FLAGS:
        if word.startswith(flag) and (rest := _split_joined(word[len(flag) :])) is not None:
            return (flag, *rest)
    return None


def parse_flags(raw: str | None) -> frozenset[str]:
    words = [word for word in re.split(r"[^a-z]+", (raw or "").lower()) if word]
    if not words:
        return DEFAULT_FLAGS
    flags: set[str] = set()
    for word in words:
        found = _split_joined(word)
        if found is None:
            raise FacequeueError(
                ErrorCode.INVALID_REQUEST,
                f"unknown detection_flags word {word[:40]!r}; known flags: {', '.join(KNOWN_FLAGS)} "
                "(empty = propoints,classifiers)",
            )
        flags.update(found)
    return frozenset(flags)


def normalise_flags(raw: str | None) -> str:
    """Canonical text form, stored on the job and used in the dedupe key."""
    return ",".join(sorted(parse_flags(raw)))
