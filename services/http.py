"""HTTP plumbing shared by every role: MLflow-shaped error bodies for every failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web

from ingest.errors import MlflowError, UnavailableError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error_code: str, message: str) -> web.Response:
    """Return MLflow's `{"error_code", "message"}` body with the given status."""
    body = msgspec.json.encode({"error_code": error_code, "message": message})
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def mlflow_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the JSON error body the mlflow client understands."""
    try:
        return await handler(request)
    except MlflowError as exc:
        return error_response(exc.http_status, exc.error_code, exc.message)
    except UnavailableError as exc:
        # 503 is one of the statuses the mlflow client retries with backoff.
        return error_response(503, "TEMPORARILY_UNAVAILABLE", str(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "RESOURCE_EXHAUSTED", exc.text or "Request body too large")
    except web.HTTPNotFound:
        return error_response(
            404, "ENDPOINT_NOT_FOUND", f"No endpoint {request.method} {request.path}"
        )
    except web.HTTPMethodNotAllowed:
        return error_response(
            405, "ENDPOINT_NOT_FOUND", f"Method {request.method} not allowed on {request.path}"
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "INTERNAL_ERROR", "Internal error; see the server's log")
