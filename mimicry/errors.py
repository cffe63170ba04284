"""One error hierarchy for the whole package, with stable codes.

Every error the API raises on purpose is a :class:`MimicryError`. Each class
carries a stable ``code`` (a string the faces print and a service returns in
``{"error": {"code", "message"}}``), the CLI ``exit_code`` and the
``http_status`` a service answers with. Faces map errors through these
attributes only; they never catch ``ValueError`` or ``KeyError``.

Promises: codes never change meaning once released; ``str(error)`` is one
line that names the thing at fault (file, index, artist) and the reason.
"""

from __future__ import annotations

from pathlib import Path

#: The most characters of a caller's input an error message repeats (:func:`quoted`).
ECHO_CHARS = 200
#: The most characters of one error message a service answers with (:func:`clipped`):
#: at six bytes a character escaped in JSON, an error body stays under 4 KB.
MESSAGE_CHARS = 600


def quoted(value: object) -> str:
    """``repr`` of ``value`` for an error message, at most :data:`ECHO_CHARS`
    characters of it (a longer one is cut, with its length said)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= ECHO_CHARS:
        return repr(text)
    return f"{text[:ECHO_CHARS]!r}... ({len(text)} characters)"


def clipped(message: str) -> str:
    """``message`` cut to :data:`MESSAGE_CHARS` characters."""
    return message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS - 3] + "..."


class MimicryError(Exception):
    """Base of every error mimicry raises on purpose."""

    code = "error"
    exit_code = 2
    http_status = 500

    def to_dict(self) -> dict[str, str]:
        """``{"code", "message"}``, as faces print it."""
        return {"code": self.code, "message": str(self)}


class InputError(MimicryError):
    """Something the caller passed is unusable (a value, a file, a folder)."""

    code = "bad_input"
    http_status = 400


class ImageError(InputError):
    """An image could not be used. ``str()`` names the file and the reason."""

    code = "bad_image"
    http_status = 422

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class PayloadTooLargeError(InputError):
    """A request, or a file in it, is larger than the service accepts."""

    code = "too_large"
    http_status = 413


class UnsupportedMediaError(InputError):
    """An upload whose bytes are not an image type mimicry reads."""

    code = "unsupported_media"
    http_status = 415


class UnauthorizedError(MimicryError):
    """No token where one is needed."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(MimicryError):
    """A token that may not do this."""

    code = "forbidden"
    http_status = 403


class PortfolioError(InputError):
    """A portfolio source (folder or CSV) cannot be read as a whole."""

    code = "bad_portfolio"


class NotFoundError(MimicryError):
    """What was asked for is not there (an index, an artist, a work)."""

    code = "not_found"
    http_status = 404


class NotAnIndexError(NotFoundError):
    """The folder holds no mimicry index."""

    code = "not_an_index"


class ConflictError(MimicryError):
    """The thing to create exists already (an artist name taken)."""

    code = "conflict"
    http_status = 409


class PinMismatchError(MimicryError):
    """The index was built with another model or recipe (or schema) than the
    one asked for; the message says what to do (use that model, or re-index)."""

    code = "pin_mismatch"
    http_status = 409


class CorruptIndexError(MimicryError):
    """A stored file of the index is unreadable or holds data it must not
    (for example a pickled object): refused, never executed."""

    code = "corrupt_index"
    http_status = 500


class RetryLaterError(MimicryError):
    """Not now: the same request may succeed after ``retry_after`` seconds
    (faces answer 503 with ``Retry-After``)."""

    http_status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class LockedError(RetryLaterError):
    """Another writer holds the index."""

    code = "locked"


class BusyError(RetryLaterError):
    """The service has as many requests in flight as it takes."""

    code = "busy"


class RequestTimeoutError(InputError):
    """A request whose body did not arrive within the service's body timeout."""

    code = "timeout"
    http_status = 408


class NotCalibratedError(MimicryError):
    """The operation needs a calibrated index; run ``mimicry calibrate``."""

    code = "not_calibrated"
    http_status = 409


class BackboneError(MimicryError):
    """A backbone cannot be built: the message names the model, where it
    looked, and what the user can do."""

    code = "backbone_unavailable"
    http_status = 503


__all__ = [
    "BackboneError",
    "BusyError",
    "ConflictError",
    "CorruptIndexError",
    "ForbiddenError",
    "ImageError",
    "InputError",
    "LockedError",
    "MimicryError",
    "NotAnIndexError",
    "NotCalibratedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PinMismatchError",
    "PortfolioError",
    "RetryLaterError",
    "UnauthorizedError",
    "UnsupportedMediaError",
    "clipped",
    "quoted",
]
