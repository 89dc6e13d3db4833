"""Credentials never reach a log line: `?api_key=…` (and other secret-looking parameters) are redacted.

Installed by create_app on the root logger's handlers and on uvicorn's loggers (its access log writes the
request line, query string included, through its own handler), so every line the api writes is covered.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMETER = re.compile(
    r"(?i)(?<![A-Za-z0-9])(api_key|api_secret|apikey|access_token|token|password|secret|key)=([^&\s\"'#]+)"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return SECRET_PARAMETER.sub(rf"\1={REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites the message and its string arguments (uvicorn's access formatter reads the arguments by
    position, so they are redacted in place rather than merged into the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "gunicorn.access", "gunicorn.error")


def install_redaction() -> None:
    """Idempotent: one filter on each logger above and on each of their handlers."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactSecrets) for f in target.filters):
                target.addFilter(RedactSecrets())
