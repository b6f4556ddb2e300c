"""roo's exceptions: what went wrong in roo's words, not a gRPC status dump.

Every error the client raises is a :class:`RooError`. The subclasses say
what kind of failure it was, and also derive from the built-in exception a
Python programmer would reach for (``except LookupError`` catches an unknown
pipeline too).
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.flight as flight


class RooError(Exception):
    """Any error from roo. ``message`` is roo's own text; ``code`` the
    gRPC status name when the server sent one (``"NOT_FOUND"``, ...)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code


class AuthError(RooError, PermissionError):
    """The server wants a token it was not given, or refused the one given."""


class NotFoundError(RooError, LookupError):
    """An unknown pipeline, model version, audit id or stream."""


class InvalidInputError(RooError, ValueError):
    """The data or the request is not what the pipeline or model reads: a
    missing feature, a wrong type, a schema the pipeline does not take."""


class ModelError(RooError, ValueError):
    """A model roo cannot take: a file it refused, or an object the client
    cannot export (``message`` says which kinds it can)."""


class BusyError(RooError):
    """The server is at a bound (streams, requests in flight); try later."""


class UnavailableError(RooError, ConnectionError):
    """The server is not there, or is stopping. For a put, ``rows_accepted``
    is how many rows of the input the server took, when it said so."""

    def __init__(self, message: str, code: str | None = None, rows_accepted: int | None = None):
        super().__init__(message, code)
        self.rows_accepted = rows_accepted


class ServerError(RooError):
    """The server failed while doing what was asked."""


# "gRPC returned invalid argument error, with message: ..." and
# "Flight returned not found error, with message: ..." (pyarrow's text).
_RETURNED = re.compile(r"(?:gRPC|Flight) returned ([a-z ]+?) error, with message: ", re.S)
# The client's own context that pyarrow appends to the server's message.
_CONTEXT = re.compile(r"\.?\s*(?:gRPC client debug context|Client context|Detail:).*$", re.S)

_CODES = {
    "invalid argument": "INVALID_ARGUMENT",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "permission denied": "PERMISSION_DENIED",
    "resource exhausted": "RESOURCE_EXHAUSTED",
    "failed precondition": "FAILED_PRECONDITION",
    "out of range": "OUT_OF_RANGE",
    "unimplemented": "UNIMPLEMENTED",
    "internal": "INTERNAL",
    "unavailable": "UNAVAILABLE",
    "unauthenticated": "UNAUTHENTICATED",
    "unknown": "UNKNOWN",
    "aborted": "ABORTED",
    "data loss": "DATA_LOSS",
}


def _split(text: str) -> tuple[str | None, str]:
    """(gRPC code name or None, the server's message alone)."""
    m = _RETURNED.search(text)
    code = None
    if m:
        code = _CODES.get(m.group(1).strip())
        text = text[m.end():]
    return code, _CONTEXT.sub("", text).strip()


def translate(e: BaseException, doing: str = "") -> RooError:
    """The :class:`RooError` for an exception raised by pyarrow's Flight
    client (or ``e`` itself when it already is one)."""
    if isinstance(e, RooError):
        return e
    code, message = _split(str(e))
    if doing and not message.startswith(f"{doing}:"):
        message = f"{doing}: {message}"
    if isinstance(e, (flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError)):
        return AuthError(message, code or "UNAUTHENTICATED")
    if isinstance(e, flight.FlightUnavailableError):
        accepted = None
        extra = getattr(e, "extra_info", None)
        if extra:
            try:
                accepted = int(json.loads(extra)["rows_accepted"])
            except (ValueError, KeyError, TypeError):
                accepted = None
        return UnavailableError(message, code or "UNAVAILABLE", accepted)
    if isinstance(e, flight.FlightTimedOutError):
        return UnavailableError(message, code or "DEADLINE_EXCEEDED")
    if isinstance(e, flight.FlightCancelledError):
        return RooError(message, code or "CANCELLED")
    if code == "RESOURCE_EXHAUSTED":
        return BusyError(message, code)
    if isinstance(e, KeyError) or code == "NOT_FOUND":
        return NotFoundError(message, code or "NOT_FOUND")
    if isinstance(e, (pa.ArrowInvalid, pa.ArrowTypeError)) or code in (
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
    ):
        return InvalidInputError(message, code or "INVALID_ARGUMENT")
    if isinstance(e, (flight.FlightInternalError, flight.FlightServerError)):
        return ServerError(message, code or "INTERNAL")
    if isinstance(e, OSError) and "Connection refused" in str(e):
        return UnavailableError(message, "UNAVAILABLE")
    return RooError(message, code)
