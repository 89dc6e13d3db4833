"""The wire boundary for strings: one check for every string a client sends, on every route.

Control characters (NUL and the rest of C0/C1, except tab, CR and LF), lone UTF-16 surrogates (JSON allows
"\\ud800"; Postgres, JSON columns and UTF-8 encoders do not) and over-long values are refused with
INVALID_REQUEST before any route code runs, so none of them can reach a column or a JSON document.

How to use it (the api's routes do; vendor adapters must too):
- request bodies: subclass `WireModel`; every `str` in it, nested lists and dicts included, is checked, and
  plain `str` fields get `DEFAULT_MAX_LENGTH`. Give a field its own limit with one of the types below
  (`Filename`, `Url`, `Short`, ...) or `Annotated[str, Field(max_length=N)]`; base64 payloads use `Base64`.
- path, query and form strings: `api.deps.check_request_strings`, a dependency of the whole app, applies
  `check_text` to each decoded value.
- a JSON body a route parses itself: `check_json`; anything else user-supplied (a multipart filename, a
  header): `check_text`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schema.errors import ErrorCode, FacequeueError

DEFAULT_MAX_LENGTH = 2048  # any string field without its own limit (and any query, path or form value)
# Column sizes (schema/tables.py): a value that would not fit is refused here, not truncated later.
FILENAME_MAX_LENGTH = 500  # images.original_filename
FLAGS_MAX_LENGTH = 200  # images.detection_flags
URL_MAX_LENGTH = 2048  # image_url, file_uri, callback_url
SHORT_MAX_LENGTH = 256  # api keys, uids, person ids, checksums, recognition targets, parameter strings

# C0 and C1 controls except tab, LF, CR; DEL; and any UTF-16 surrogate (never valid alone in text).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LONG = 4096  # from this length an ASCII string is checked with numpy


def has_forbidden(value: str) -> bool:
    """Whether `value` holds a character _FORBIDDEN matches. The regex costs about 8 ns a character, 4 ms
    on a base64 image; a long ASCII string (base64, always) takes numpy a few passes, about 0.1 ms."""
    if len(value) < _LONG or not value.isascii():
        return _FORBIDDEN.search(value) is not None
    codes = np.frombuffer(value.encode("ascii"), np.uint8)
    if codes.max() == 0x7F:  # DEL, the only forbidden ASCII character above the controls
        return True
    if codes.min() >= 0x20:  # min and max are numpy's fast reductions: most strings end here
        return False
    allowed = sum(int(np.count_nonzero(codes == code)) for code in (0x09, 0x0A, 0x0D))  # wrapped base64
    return int(np.count_nonzero(codes < 0x20)) != allowed


def text_problem(value: str, max_length: int = DEFAULT_MAX_LENGTH) -> str | None:
    """Why `value` may not cross the wire, or None when it may."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    if has_forbidden(value):
        bad = _FORBIDDEN.search(value)
        kind = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        return f"contains {kind} (U+{ord(bad.group()):04X}) at position {bad.start()}"
    return None


def check_text(value: str, what: str, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """Return `value`, or raise INVALID_REQUEST naming `what` (the field) and the reason."""
    if (problem := text_problem(value, max_length)) is not None:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"{what} {problem}")
    return value


def _walk(value: Any, where: str) -> None:
    # Lengths are the fields' own business (pydantic, from the types below); characters are checked here,
    # unknown and nested fields included, so no string escapes the check whatever the model declares.
    if isinstance(value, str):
        if has_forbidden(value):
            raise ValueError(f"{where or 'value'} {text_problem(value, len(value))}")
    elif isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key).encode("ascii", "backslashreplace").decode()[:40]
            name = f"{where}.{key_text}" if where else key_text
            _walk(key, name)
            _walk(item, name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk(item, f"{where}[{index}]")


def check_json(data: Any, what: str = "body") -> Any:
    """The same character check for a JSON document a route parses itself (INVALID_REQUEST); returns it."""
    try:
        _walk(data, "")
    except ValueError as exc:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"{what}: {exc}") from None
    return data


class WireModel(BaseModel):
    """Base of every request body model: strings checked, plain `str` fields bounded by default."""

    model_config = ConfigDict(str_max_length=DEFAULT_MAX_LENGTH)

    @model_validator(mode="before")
    @classmethod
    def _no_forbidden_characters(cls, data: Any) -> Any:
        _walk(data, "")
        return data


# Field types with their own limits (shown as maxLength in the OpenAPI schema).
Short = Annotated[str, Field(max_length=SHORT_MAX_LENGTH)]
Filename = Annotated[str, Field(max_length=FILENAME_MAX_LENGTH)]
Flags = Annotated[str, Field(max_length=FLAGS_MAX_LENGTH)]
Url = Annotated[str, Field(max_length=URL_MAX_LENGTH)]
Base64 = Annotated[str, Field(max_length=1 << 40)]  # bounded by the request body limit instead
