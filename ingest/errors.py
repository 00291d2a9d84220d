"""The root of Runstream's exceptions; each says whether a retry can help."""

from __future__ import annotations

# MLflow's error codes and the HTTP status its server answers with (mlflow/exceptions.py).
HTTP_STATUS: dict[str, int] = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "RESOURCE_EXHAUSTED": 429,
    "ABORTED": 409,
    "RESOURCE_CONFLICT": 409,
    "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class RunstreamError(Exception):
    """Base of every error Runstream raises on purpose."""

    retriable: bool = False


class MlflowError(RunstreamError):
    """An error the client sees as MLflow's `{"error_code", "message"}` body."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.retriable = error_code in {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}

    @property
    def http_status(self) -> int:
        """Return the HTTP status MLflow's server pairs with this code."""
        return HTTP_STATUS.get(self.error_code, 500)

    def to_json(self) -> dict[str, str]:
        """Return the body MLflow's client parses into a RestException."""
        return {"error_code": self.error_code, "message": self.message}


def invalid_parameter(message: str) -> MlflowError:
    """Return MLflow's 400 INVALID_PARAMETER_VALUE with the given message."""
    return MlflowError("INVALID_PARAMETER_VALUE", message)


def does_not_exist(message: str) -> MlflowError:
    """Return MLflow's 404 RESOURCE_DOES_NOT_EXIST with the given message."""
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message)


class DecodeError(RunstreamError):
    """Bytes on the topic that are not a Runstream record of any known version."""


class UnavailableError(RunstreamError):
    """A dependency (Kafka, PostgreSQL) cannot take the request now; retry later."""

    retriable = True


class EmitterClosedError(RunstreamError):
    """The emitter is not running (not started, closing or closed); nothing was buffered."""


class BufferFullError(RunstreamError):
    """The emitter's buffer stayed full for the whole wait; nothing was buffered, so retry later."""

    retriable = True


class FlushTimeoutError(RunstreamError):
    """Not every buffered event was acknowledged by the deadline."""

    retriable = True
