"""The emitter's small client of the gateway: runs/create, runs/update and runs/log-batch.

A call answers like MLflow's client: the gateway's 200 body, or its `MlflowError`. 429, 502, 503
and 504 are retried with exponential backoff until the call's deadline, as the mlflow client
retries them; so is a request that got no answer, unless it may have reached the gateway and is
not safe to repeat (runs/create would start a second run). Every other answer is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final, Protocol

import aiohttp
import msgspec
import structlog

from ingest.entries import ParamEntry, TagEntry
from ingest.errors import EmitterClosedError, MlflowError, RunstreamError, UnavailableError
from ingest.validation import MAX_PARAMS_TAGS_PER_BATCH

__all__ = ["AiohttpTransport", "GatewayClient", "HttpTransport", "NoAnswerError"]

log = structlog.get_logger(__name__)

RETRIED_STATUSES: Final = frozenset({429, 502, 503, 504})
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class NoAnswerError(UnavailableError):
    """The gateway gave no answer; `delivered` says whether the request may have reached it."""

    def __init__(self, message: str, *, delivered: bool) -> None:
        super().__init__(message)
        self.delivered = delivered


class HttpTransport(Protocol):
    """POSTs JSON bytes and returns the status and body (tests pass a fake)."""

    async def start(self) -> None:
        """Open the connection pool."""

    async def stop(self) -> None:
        """Close the connection pool; safe to call twice."""

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """Return (status, body); raise NoAnswerError when no answer came within `timeout_s`."""
        ...


class AiohttpTransport:
    """`HttpTransport` over one aiohttp session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session."""
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Close the session; safe to call twice."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """POST the JSON body and return the answer's status and bytes."""
        session = self._session
        if session is None:
            raise NoAnswerError(f"{url}: the HTTP session is closed", delivered=False)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.post(url, data=body, headers=_JSON_HEADERS, timeout=timeout) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            raise NoAnswerError(f"{url} is unreachable: {exc!r}", delivered=False) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NoAnswerError(f"{url} did not answer: {exc!r}", delivered=True) from exc


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    size = MAX_PARAMS_TAGS_PER_BATCH
    return [items[i : i + size] for i in range(0, len(items), size)]


class GatewayClient:
    """The gateway endpoints the emitter calls, each bounded by `deadline_s`, retries included."""

    def __init__(
        self,
        tracking_uri: str,
        transport: HttpTransport,
        *,
        deadline_s: float,
        retry_backoff_s: float,
        max_retry_backoff_s: float,
    ) -> None:
        self._base = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow"
        self._transport = transport
        self._deadline_s = deadline_s
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._open = False

    async def start(self) -> None:
        """Open the transport."""
        await self._transport.start()
        self._open = True

    async def stop(self) -> None:
        """Close the transport; calls still running raise EmitterClosedError."""
        self._open = False
        await self._transport.stop()

    async def create_run(self, body: dict[str, Any]) -> str:
        """Create a run and return its id."""
        answer = await self.call("runs/create", body, idempotent=False)
        try:
            run_id = answer["run"]["info"]["run_id"]
        except (KeyError, TypeError):
            run_id = None
        if not isinstance(run_id, str):
            raise MlflowError("INTERNAL_ERROR", f"runs/create answered without a run id: {answer}")
        return run_id

    async def end_run(self, run_id: str, status: str, end_time: int) -> None:
        """Set a run's terminal status and end time."""
        await self.call("runs/update", {"run_id": run_id, "status": status, "end_time": end_time})

    async def log_batch(
        self, run_id: str, params: Sequence[ParamEntry] = (), tags: Sequence[TagEntry] = ()
    ) -> None:
        """Log params and tags in requests of at most MLflow's 100 of each, in order.

        With neither, one empty request asks only the gateway's "is the run active?" check.
        Like the mlflow client's own chunking, a refused request leaves earlier ones logged.
        """
        param_chunks, tag_chunks = _chunks(params), _chunks(tags)
        for i in range(max(len(param_chunks), len(tag_chunks), 1)):
            body: dict[str, Any] = {"run_id": run_id}
            if i < len(param_chunks):
                body["params"] = [{"key": p.key, "value": p.value} for p in param_chunks[i]]
            if i < len(tag_chunks):
                body["tags"] = [{"key": t.key, "value": t.value} for t in tag_chunks[i]]
            await self.call("runs/log-batch", body)

    async def call(
        self, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """POST to an MLflow endpoint and return its JSON answer, retrying what may be retried."""
        url = f"{self._base}/{path}"
        data = _json_encode(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        attempt = 0
        while True:
            if not self._open:
                raise EmitterClosedError("the emitter closed during the call")
            try:
                status, raw = await self._transport.post(
                    url, data, max(deadline - loop.time(), 0.001)
                )
            except NoAnswerError as exc:
                if not self._open:
                    raise EmitterClosedError("the emitter closed during the call") from exc
                if exc.delivered and not idempotent:
                    raise
                failure: RunstreamError = exc
            else:
                try:
                    return _answer(url, status, raw)
                except (MlflowError, UnavailableError) as exc:
                    if status not in RETRIED_STATUSES:
                        raise
                    failure = exc
            delay = min(self._max_retry_backoff_s, self._retry_backoff_s * 2**attempt)
            attempt += 1
            if loop.time() + delay >= deadline:
                raise failure
            log.warning(
                "emitter_request_retried",
                path=path,
                error=str(failure),
                attempt=attempt,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)


def _answer(url: str, status: int, raw: bytes) -> dict[str, Any]:
    """Return the JSON of a 200, or raise the error the answer stands for."""
    try:
        payload = _json_decode(raw) if raw else None
    except msgspec.DecodeError:
        payload = None
    if status == 200 and isinstance(payload, dict):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("error_code"), str):
        raise MlflowError(payload["error_code"], str(payload.get("message", "")))
    if status in RETRIED_STATUSES:
        raise UnavailableError(f"{url} answered HTTP {status}")
    raise MlflowError("INTERNAL_ERROR", f"{url} answered HTTP {status}: {raw[:200]!r}")
