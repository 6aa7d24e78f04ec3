"""Logging set-up: JSON lines on stderr, one object per line, for structlog and stdlib alike.

Callers pass ids and counts only, never patient data. The lines of other libraries (uvicorn's
``uvicorn.error``, anything on the standard ``logging`` root) are rendered as the same JSON
objects (``event`` is their message, ``logger`` their logger name); a traceback is never
written, only the exception's type (``error``): an exception's message may quote input.
Context bound with ``structlog.contextvars`` (the request id of the request being answered)
is added to every structlog line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

_HANDLER_NAME = "wor_bridge_json"


def _type_only(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replace a traceback by the exception's type name (no message, no frames)."""
    info = event.pop("exc_info", None)
    event.pop("stack_info", None)
    if info:
        exc = info[1] if isinstance(info, tuple) else info
        if isinstance(exc, BaseException):
            event["error"] = type(exc).__name__
    return event


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record comes (not when made)."""

    @property
    def stream(self) -> Any:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def _json_handler(level: int) -> logging.Handler:
    """A stderr handler rendering stdlib records as the JSON lines structlog writes."""
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _type_only,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
    )
    return handler


def configure(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr (stdout carries the CLI's FHIR output), at ``level`` and above.

    Also routes the standard ``logging`` root (and so uvicorn's loggers, when uvicorn is run
    with ``log_config=None``) to the same JSON lines."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _type_only,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(_json_handler(level))
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        named = logging.getLogger(name)
        named.handlers = []  # whatever uvicorn installed: its lines go through the root
        named.propagate = True


def uvicorn_logging(level: int = logging.WARNING) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: no logging set-up of its own (its lines then
    reach the JSON handler of ``configure``), and its own access lines off (the service writes
    its own ``request`` line per request, without query values)."""
    return {"log_config": None, "log_level": level, "access_log": False}
