"""The deletion-request service: a FastAPI application over a shard store.

:func:`create_app` builds the application for one store; ``obliviate serve --store DIR`` runs it
on uvicorn. Endpoints (JSON, versioned under ``/v1``; every one but ``/healthz`` needs an API key
in ``Authorization: Bearer obv_...``):

``POST /v1/deletions``                 ids or a data subject; ``Idempotency-Key`` header; 202
``GET  /v1/deletions``                 recent requests (read)
``GET  /v1/deletions/{id}``            status: queued, running, done, failed, cancelled
``GET  /v1/deletions/{id}/receipt``    the Ed25519-signed receipt of a done request
``POST /v1/receipts/verify``           check a signed receipt against this server's key
``GET  /v1/receipt-key``               the public key that signs receipts
``POST /v1/predict``                   predictions of the current model version
``GET  /v1/model``                     version, shards, slices, graph, data fingerprint
``GET  /v1/openapi.json``              this API's OpenAPI schema (also in ``docs/openapi.json``)
``GET  /metrics``                      Prometheus text format (read)
``GET  /``                             the status page (read key, or a session from ``/login``)
``GET  /healthz``                      liveness, no key

Errors are ``{"error": {"code", "message"}}`` with a 4xx status for bad input; they never echo
the request body, keys or tracebacks (a 5xx says only ``internal error``; the log has the rest).
There is no CORS middleware: browsers refuse cross-origin calls.
"""

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from obliviate.errors import ObliviateError
from obliviate.serve import queue, signing
from obliviate.serve.auth import KeyChecker, Principal, RateLimiter, Sessions, connect
from obliviate.serve.worker import Worker

log = logging.getLogger("obliviate.serve")
API_VERSION = "1"
SESSION_COOKIE = "obliviate_session"
INT64 = 2**63


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server. Limits: ``max_body_bytes`` per request body, ``max_ids`` per
    deletion request, ``max_predict_rows`` per prediction; ``rate``/``burst``: requests per
    second and burst size per API key (``rate <= 0`` disables the limit); ``batch_window``:
    seconds the worker waits after the oldest waiting request before a retraining pass."""

    store: Path
    backend: str = "local"
    n_workers: int | None = None
    data_dir: str | None = None
    batch_window: float = 2.0
    max_body_bytes: int = 1_048_576
    max_ids: int = 10_000
    max_predict_rows: int = 1_000
    rate: float = 20.0
    burst: int = 100
    signing_key: Path | None = None
    run_worker: bool = True
    key_cache_seconds: float = 30.0
    secure_cookies: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.store / "serve" / "receipt_signing_key.pem"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers


# ---- request and response bodies -------------------------------------------------------------
class DeletionIn(BaseModel):
    """A deletion request: exactly one of ``ids`` (sample ids) or ``subject`` (a data subject)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[StrictInt, Field(ge=-INT64, lt=INT64)]] | None = Field(
        default=None, description="sample ids to delete (integers)"
    )
    subject: str | None = Field(
        default=None, min_length=1, max_length=512, description="a data subject of the store"
    )

    @model_validator(mode="after")
    def _one_of(self) -> "DeletionIn":
        if (self.ids is None) == (self.subject is None):
            raise ValueError("give exactly one of 'ids' (a list of integers) or 'subject'")
        if self.ids is not None and not self.ids:
            raise ValueError("'ids' is empty; give at least one id")
        return self


class Timestamps(BaseModel):
    accepted: str | None
    forwarded: str | None
    started: str | None
    finished: str | None


class DeletionOut(BaseModel):
    request_id: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    n_ids: int
    ids_sha256: str
    n_unknown_ids: int = Field(description="ids the store never trained on (reported, not deleted)")
    unknown_ids: list[int] = Field(description="the first 100 unknown ids")
    subject_sha256: str | None
    error: str | None
    timestamps: Timestamps
    model_version_before: int | None
    model_version_after: int | None
    status_url: str
    receipt_url: str
    replayed: bool = Field(False, description="an earlier request with this Idempotency-Key")


class SignatureOut(BaseModel):
    alg: str
    key_id: str
    value: str


class SignedReceipt(BaseModel):
    document: dict[str, Any]
    signature: SignatureOut


class VerifyOut(BaseModel):
    valid: bool
    reason: str


class ReceiptKeyOut(BaseModel):
    alg: str
    key_id: str
    public_key_pem: str
    public_key_b64: str


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: list[list[StrictFloat | StrictInt]] = Field(
        min_length=1, description="rows of features, shaped like the store's (standardised) data"
    )


class PredictOut(BaseModel):
    model_version: int
    model_sha256: str
    labels: list[int]
    proba: list[list[float]]


class ShardOut(BaseModel):
    shard: int
    checkpoint: str | None
    n_samples: int


class ModelOut(BaseModel):
    model_version: int
    model_sha256: str
    n_shards: int
    n_slices: int
    graph: str
    aggregation: str
    dataset: str
    data_sha256: str
    samples: dict[str, int]
    shards: list[ShardOut]


class TicketOut(BaseModel):
    url: str
    expires_in: float


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}


# ---- ASGI middleware: body limit and request counting ----------------------------------------
async def _send_error(send: Any, status: int, code: str, message: str, close: bool = False) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) before the application reads them, and
    non-JSON bodies to ``/v1/`` (415)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = False
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = True
        chunks: list[bytes] = []
        if not too_big and scope["method"] in ("POST", "PUT", "PATCH"):
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    too_big = True
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
        if too_big:
            await _send_error(
                send,
                413,
                "body_too_large",
                f"the request body is over the limit of {self.max_bytes} bytes",
                close=True,
            )
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            data = b"".join(chunks)
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if (
                data
                and str(scope.get("path", "")).startswith("/v1/")
                and ctype != b"application/json"
                and not ctype.endswith(b"+json")
            ):
                await _send_error(
                    send,
                    415,
                    "unsupported_media_type",
                    "the API takes JSON bodies: send Content-Type: application/json",
                )
                return
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": data, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        else:
            await self.app(scope, receive, send)


class CountRequests:
    def __init__(self, app: Any, counter: Counter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.counter.labels(scope["method"], path, str(status["code"])).inc()


# ---- the application -------------------------------------------------------------------------
class _State:
    """Everything one application holds: the store path, keys, limits, signing key, worker."""

    def __init__(self, config: ServeConfig) -> None:
        from obliviate.sharded import ShardedStore

        self.config = config
        self.ledger_path = config.store / "ledger.sqlite"
        probe = ShardedStore(config.store, data_dir=config.data_dir)  # a clear error if not a store
        probe.close()
        self._lock_fd: int | None = None
        self.warm = False
        db = connect(self.ledger_path)
        db.executescript(queue.SCHEMA)
        db.close()
        self.keys = KeyChecker(self.ledger_path, config.key_cache_seconds)
        self.limiter = RateLimiter(config.rate, config.burst)
        self.sessions = Sessions()
        self.private_key = signing.load_or_create_private_key(config.signing_key_path)
        self.public_info = signing.public_key_info(self.private_key.public_key())
        self.local = threading.local()
        self.committer = queue.GroupCommitter(lambda: connect(self.ledger_path))
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "obliviate_http_requests",
            "HTTP requests by method, route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.retrain_seconds = Histogram(
            "obliviate_retraining_seconds",
            "Seconds per retraining pass of the worker",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.registry.register(_LedgerCollector(self))
        self.worker: Worker | None = None
        if config.run_worker:
            self.worker = Worker(
                config.store,
                backend=config.backend,
                n_workers=config.n_workers,
                data_dir=config.data_dir,
                batch_window=config.batch_window,
                on_pass=lambda seconds, n: self.retrain_seconds.observe(seconds),
            )
            # one worker per store: a second server refuses to start (taken last, so that
            # nothing above can fail while it is held)
            self._lock_fd = serve_lock(config.store)

    def release(self) -> None:
        """Give up ``STORE/serve.lock`` (idempotent; the kernel also drops it when we die)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def db(self) -> Any:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = connect(self.ledger_path)
        return db

    def ledger(self) -> Any:
        """This thread's :class:`~obliviate.sharded.ledger.Ledger` (light: one connection)."""
        ledger = getattr(self.local, "ledger", None)
        if ledger is None:
            from obliviate.sharded.ledger import Ledger

            ledger = self.local.ledger = Ledger(self.ledger_path)
        return ledger

    def store(self) -> Any:
        store = getattr(self.local, "store", None)
        if store is None:
            from obliviate.sharded import ShardedStore

            store = self.local.store = ShardedStore(
                self.config.store, data_dir=self.config.data_dir
            )
        return store


def serve_lock(store: Path) -> int:
    """Take the exclusive ``STORE/serve.lock`` (``flock``, not waiting) that the one server
    running a worker on a store holds for its whole life; the open descriptor, to be closed
    to release it. Raises :class:`ObliviateError` when another server holds it."""
    fd = os.open(store / "serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ObliviateError(
            f"another `obliviate serve` is already running on the store {str(store)!r} "
            "(it holds serve.lock); stop it first, or use its address"
        ) from None
    return fd


class _LedgerCollector:
    """Gauges read from the ledger at scrape time: queue length, requests by state, version."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        db = self.state.db()
        counts = queue.counts(db)
        g = GaugeMetricFamily(
            "obliviate_queue_length", "Deletion requests accepted and not yet done"
        )
        g.add_metric([], counts["queued"] + counts["running"] + counts["failed"])
        yield g
        g = GaugeMetricFamily(
            "obliviate_requests", "Deletion requests of the service by state", labels=["state"]
        )
        for state, n in sorted(counts.items()):
            g.add_metric([state], n)
        yield g
        row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        g = GaugeMetricFamily("obliviate_model_version", "Model version of the store")
        g.add_metric([], float(json.loads(row[0])) if row else 0.0)
        yield g
        worker = self.state.worker
        g = GaugeMetricFamily("obliviate_worker_busy", "1 while a retraining pass runs")
        g.add_metric([], 1.0 if worker is not None and worker.busy else 0.0)
        yield g


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI schema of the service (what ``docs/openapi.json`` holds); needs no store."""
    return _build(ServeConfig(store=Path(".")), None).openapi()


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application serving ``config.store`` (see the module docstring).

    Raises :class:`ObliviateError` when ``config.store`` is not a shard store."""
    return _build(config, _State(config))


def _build(config: ServeConfig, state_or_none: "_State | None") -> FastAPI:
    state: _State = state_or_none  # type: ignore[assignment]  # None only to build the schema

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        worker = None if state_or_none is None else state_or_none.worker
        if worker is not None:
            import anyio

            # load the training data and the shard models before serving, so that the first
            # retraining pass does not stall the first requests while it imports and parses
            if not state.warm:
                await anyio.to_thread.run_sync(warm_up, state)
            worker.start()
        yield
        if worker is not None:
            worker.close()
        if state_or_none is not None:
            state_or_none.committer.close()
            state_or_none.release()

    app = FastAPI(
        title="obliviate deletion-request service",
        version=API_VERSION,
        description=(
            "Deletion requests over an exactly-unlearnable sharded model: accepted durably, "
            "batched into retraining passes, answered with Ed25519-signed receipts."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.obliviate = state
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if state_or_none is not None:
        app.add_middleware(CountRequests, counter=state_or_none.http_requests)

    # ---- errors ----------------------------------------------------------------------------
    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse(
            {"error": {"code": code, "message": message}}, status_code=status, headers=headers
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        return error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ObliviateError)
    async def _obliviate_error(request: Request, exc: ObliviateError) -> Any:
        return error(422, "invalid", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return error(400, "malformed_json", "the request body is not valid JSON")
        parts = []
        for e in errs[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return error(422, "invalid_body", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400 and "parsing the body" in detail:
            # FastAPI's answer to a body json.loads cannot read (bad UTF-8, too deeply nested)
            return error(400, "malformed_json", "the request body is not valid JSON")
        return error(exc.status_code, code, detail)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, "internal", "internal error; the server log has the details")

    # ---- authentication --------------------------------------------------------------------
    def principal_of(request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return state.keys.check(token.strip())
        if request.headers.get("x-api-key"):
            return state.keys.check(request.headers["x-api-key"].strip())
        return None

    def is_known_replay(request: Request, principal: Principal) -> bool:
        """A retried ``POST /v1/deletions`` whose Idempotency-Key this API key already used: it
        creates nothing (it gets its accepted request, or 409 for another body), so the rate
        limit lets it through and a client retrying after a lost answer is not locked out."""
        idem = request.headers.get("idempotency-key")
        if request.method != "POST" or request.url.path != "/v1/deletions" or not idem:
            return False
        row = (
            state.db()
            .execute(
                "SELECT 1 FROM serve_requests WHERE key_id = ? AND idem_key = ?",
                (principal.key_id, idem),
            )
            .fetchone()
        )
        return row is not None

    def require(permission: str) -> Any:
        def dependency(request: Request) -> Principal:
            has_key = bool(request.headers.get("authorization") or request.headers.get("x-api-key"))
            principal = principal_of(request)
            if principal is None:
                raise ApiError(
                    401,
                    "unauthenticated" if not has_key else "invalid_key",
                    "an API key is required: Authorization: Bearer obv_..."
                    if not has_key
                    else "the API key is not valid (unknown, revoked or mistyped)",
                    {"WWW-Authenticate": "Bearer"},
                )
            wait = state.limiter.allow(principal.key_id)
            if wait > 0 and not is_known_replay(request, principal):
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many requests for this key; retry in {wait:.2f} s",
                    {"Retry-After": str(max(1, int(wait + 0.999)))},
                )
            if not principal.can(permission):
                raise ApiError(
                    403,
                    "forbidden",
                    f"a {principal.role!r} key may not do this (needs {permission!r} rights)",
                )
            return principal

        return dependency

    def urls(rid: str) -> dict[str, str]:
        return {
            "status_url": f"/v1/deletions/{rid}",
            "receipt_url": f"/v1/deletions/{rid}/receipt",
        }

    # ---- endpoints -------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness (no key needed): ``ok`` while the worker thread runs."""
        alive = state.worker is None or state.worker._thread.is_alive()
        return {"status": "ok" if alive else "worker stopped"}

    @app.post(
        "/v1/deletions",
        status_code=202,
        response_model=DeletionOut,
        responses=ERRORS,
        tags=["deletions"],
    )
    def submit(
        body: DeletionIn,
        principal: Annotated[Principal, Depends(require("submit"))],
        idempotency_key: Annotated[
            str | None, Header(max_length=255, pattern=r"^[\x21-\x7e]+$")
        ] = None,
    ) -> Any:
        """Accept a deletion request (durably recorded before the answer) for the worker."""
        from obliviate.sharded.subjects import subject_ids

        ledger = state.ledger()
        subject_sha = None
        if body.subject is not None:
            subject_sha, wanted = subject_ids(ledger, body.subject)
            if not wanted:
                raise ApiError(422, "unknown_subject", "no data subject of that name in this store")
        else:
            assert body.ids is not None
            # the limit counts the list as sent: duplicates cost parsing and hashing too
            if len(body.ids) > config.max_ids:
                raise ApiError(
                    422,
                    "too_many_ids",
                    f"{len(body.ids)} ids in one request; the limit is {config.max_ids}: split it",
                )
            wanted = sorted(set(body.ids))
        if len(wanted) > config.max_ids:
            raise ApiError(
                422,
                "too_many_ids",
                f"{len(wanted)} ids in one request; the limit is {config.max_ids}: split it",
            )
        states = ledger.sample_states(wanted)
        known = [i for i in wanted if i in states]
        unknown = [i for i in wanted if i not in states]
        if not known:  # counts only: an error never echoes the body
            raise ApiError(
                422,
                "unknown_ids",
                f"none of the {len(unknown)} id(s) was ever trained on in this store",
            )
        try:
            got = state.committer.accept(
                queue.Intake(
                    key_id=principal.key_id,
                    idem_key=idempotency_key,
                    body=body.model_dump(exclude_none=True),
                    ids=known,
                    unknown_ids=unknown,
                    subject_sha256=subject_sha,
                )
            )
        except queue.IdempotencyConflict:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used before with a different body; use a new key",
            ) from None
        if state.worker is not None:
            state.worker.wake.set()
        view = queue.view(state.db(), got.request_id)
        assert view is not None
        headers = {"Location": f"/v1/deletions/{got.request_id}"}
        if got.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(
            {**view, **urls(got.request_id), "replayed": got.replayed},
            status_code=202,
            headers=headers,
        )

    @app.get(
        "/v1/deletions", response_model=list[DeletionOut], responses=ERRORS, tags=["deletions"]
    )
    def list_deletions(
        _: Annotated[Principal, Depends(require("read"))], limit: int = 50
    ) -> list[dict[str, Any]]:
        """The most recent requests, newest first (at most ``limit``, 1..1000)."""
        if not 1 <= limit <= 1000:
            raise ApiError(422, "invalid", f"limit {limit} is not in 1..1000")
        return [{**v, **urls(v["request_id"])} for v in queue.recent(state.db(), limit)]

    @app.get(
        "/v1/deletions/{request_id}",
        response_model=DeletionOut,
        responses=ERRORS,
        tags=["deletions"],
    )
    def deletion_status(
        request_id: str, _: Annotated[Principal, Depends(require("status"))]
    ) -> dict[str, Any]:
        """The status of one request, with its timestamps (UTC)."""
        view = queue.view(state.db(), request_id)
        if view is None:
            raise ApiError(404, "not_found", "no deletion request with that id")
        return {**view, **urls(request_id)}

    def signed_receipt(request_id: str) -> dict[str, Any]:
        view = queue.view(state.db(), request_id)
        if view is None:
            raise ApiError(404, "not_found", "no deletion request with that id")
        if view["status"] != "done":
            raise ApiError(
                409, "not_done", f"the request is {view['status']}; its receipt comes when done"
            )
        row = queue.row(state.db(), request_id)
        assert row is not None
        unknown = json.loads(row["unknown_ids"])
        document = {
            "format": signing.FORMAT,
            "key_id": state.public_info["key_id"],
            "receipt": state.store().receipt(request_id),
            "request": {
                "request_id": request_id,
                "subject_sha256": row["subject_sha256"],
                "n_unknown_ids": len(unknown),
                "unknown_ids_sha256": queue.unknown_sha256(unknown),
                "accepted": view["timestamps"]["accepted"],
            },
        }
        return signing.sign(document, state.private_key)

    @app.get(
        "/v1/deletions/{request_id}/receipt",
        response_model=SignedReceipt,
        responses=ERRORS,
        tags=["deletions"],
    )
    def receipt(
        request_id: str, _: Annotated[Principal, Depends(require("status"))]
    ) -> dict[str, Any]:
        """The signed receipt of a done request (409 while it is not done)."""
        return signed_receipt(request_id)

    async def raw_body(request: Request) -> bytes:
        return await request.body()  # already read (and cached) for the body model

    @app.post("/v1/receipts/verify", response_model=VerifyOut, responses=ERRORS, tags=["receipts"])
    def verify_receipt(
        body: SignedReceipt,
        _: Annotated[Principal, Depends(require("status"))],
        raw: Annotated[bytes, Depends(raw_body)],
    ) -> dict[str, Any]:
        """Check a signed receipt against this server's key: 200 when valid, 422 when not
        (altered, a signature replayed from another receipt, or JSON that names a key twice)."""
        ok, reason = signing.verify(raw, state.private_key.public_key())
        if not ok:
            raise ApiError(422, "signature_invalid", reason)
        return {"valid": True, "reason": reason}

    @app.get("/v1/receipt-key", response_model=ReceiptKeyOut, responses=ERRORS, tags=["receipts"])
    def receipt_key(_: Annotated[Principal, Depends(require("status"))]) -> dict[str, str]:
        """The Ed25519 public key that signs receipts (give it to whoever checks them)."""
        return state.public_info

    def model_info() -> dict[str, Any]:
        from obliviate.sharded.receipts import model_hash

        store = state.store()
        status = store.status()
        current = store.ledger.current_checkpoints()
        cfg = store.config
        return {
            "model_version": status["model_version"],
            "model_sha256": model_hash(current, cfg.n_shards, cfg.n_slices),
            "n_shards": cfg.n_shards,
            "n_slices": cfg.n_slices,
            "graph": cfg.graph,
            "aggregation": cfg.aggregation,
            "dataset": store.data_spec.dataset,
            "data_sha256": store.ledger.get_meta("data_sha256"),
            "samples": status["samples"],
            "shards": [
                {"shard": s["shard"], "checkpoint": s["checkpoint"], "n_samples": s["n_samples"]}
                for s in status["shards"]
            ],
        }

    @app.get("/v1/model", response_model=ModelOut, responses=ERRORS, tags=["model"])
    def model(_: Annotated[Principal, Depends(require("read"))]) -> dict[str, Any]:
        """The current model: version, shards, slices, graph, data fingerprint."""
        return model_info()

    @app.post("/v1/predict", response_model=PredictOut, responses=ERRORS, tags=["model"])
    def predict(
        body: PredictIn, _: Annotated[Principal, Depends(require("read"))]
    ) -> dict[str, Any]:
        """Class scores of the current model version (the shard ensemble) and its version."""
        from obliviate.sharded.receipts import model_hash

        if len(body.x) > config.max_predict_rows:
            raise ApiError(
                422,
                "too_many_rows",
                f"{len(body.x)} rows; the limit is {config.max_predict_rows} per request",
            )
        if len({len(r) for r in body.x}) != 1:
            raise ApiError(422, "ragged_rows", "every row of 'x' must have the same length")
        store = state.store()
        cfg = store.config
        for _attempt in range(3):  # the version and the weights must belong together
            before = store.ledger.current_checkpoints()
            proba = store.predict_proba(body.x, preprocessed=True)  # documented: standardised
            after = store.ledger.current_checkpoints()
            if before == after:
                break
        version = int(store.ledger.get_meta("version"))
        return {
            "model_version": version,
            "model_sha256": model_hash(after, cfg.n_shards, cfg.n_slices),
            "labels": proba.argmax(dim=1).tolist(),
            "proba": proba.tolist(),
        }

    @app.get("/v1/openapi.json", include_in_schema=False)
    def openapi_schema(_: Annotated[Principal, Depends(require("status"))]) -> dict[str, Any]:
        return app.openapi()

    @app.get("/metrics", response_class=PlainTextResponse, responses=ERRORS, tags=["service"])
    def metrics(_: Annotated[Principal, Depends(require("read"))]) -> PlainTextResponse:
        """Prometheus text format: queue length, requests by state, retraining seconds, version."""
        return PlainTextResponse(
            generate_latest(state.registry).decode(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    # ---- the status page -------------------------------------------------------------------
    @app.post("/v1/page-tickets", response_model=TicketOut, responses=ERRORS, tags=["service"])
    def page_ticket(principal: Annotated[Principal, Depends(require("read"))]) -> dict[str, Any]:
        """A one-time link (60 s) that opens a status-page session for this key's holder."""
        return {
            "url": f"/login?ticket={state.sessions.ticket(principal)}",
            "expires_in": state.sessions.ticket_ttl,
        }

    def page_principal(request: Request) -> Principal | None:
        principal = principal_of(request)
        if principal is None:
            token = request.cookies.get(SESSION_COOKIE)
            principal = state.sessions.get(token) if token else None
        return principal if principal is not None and principal.can("read") else None

    def login_response(principal: Principal) -> Any:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            state.sessions.open(principal),
            max_age=int(state.sessions.ttl),
            httponly=True,
            samesite="strict",
            secure=config.secure_cookies,
        )
        return response

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(ticket: str | None = None) -> Any:
        if ticket is not None:
            principal = state.sessions.redeem(ticket)
            if principal is None:
                return HTMLResponse(_login_html("the link has expired or was used"), 401)
            return login_response(principal)
        return HTMLResponse(_login_html(None))

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Any:
        from urllib.parse import parse_qs

        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        principal = state.keys.check(key) if key else None
        if principal is None or not principal.can("read"):
            return HTMLResponse(_login_html("that key does not open the status page"), 401)
        return login_response(principal)

    @app.post("/logout", include_in_schema=False)
    def logout() -> Any:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page(request: Request) -> Any:
        principal = page_principal(request)
        if principal is None:
            return RedirectResponse("/login", status_code=303)
        return HTMLResponse(_render_page(state, model_info()))

    return app


def warm_up(state: _State) -> None:
    """Load the training data and the shard models (raises :class:`ObliviateError` when the
    store is damaged: ``obliviate serve`` calls it before uvicorn starts, for a one-line error)."""
    from obliviate.sharded.config import load_data

    store = state.store()
    load_data(store.data_spec)
    shape = tuple(store.ledger.get_meta("sample_shape"))
    store.predict_proba([[0.0] * int(np.prod(shape))], preprocessed=True)
    state.warm = True


def _login_html(problem: str | None) -> str:
    from jinja2 import Environment, PackageLoader

    env = Environment(loader=PackageLoader("obliviate.serve"), autoescape=True)
    return env.get_template("login.html.j2").render(problem=problem)


def _render_page(state: _State, model: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader

    db = state.db()
    history = []
    for _seq, when, kind, payload in db.execute(
        "SELECT seq, time, kind, payload FROM events WHERE kind IN ('trained', 'requests_completed') "
        "ORDER BY seq DESC LIMIT 30"
    ):
        p = json.loads(payload)
        history.append(
            {
                "version": p.get("version", p.get("version_after")),
                "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)),
                "kind": "initial training" if kind == "trained" else "deletion pass",
                "n_requests": len(p.get("requests", [])),
                "n_checkpoints": len(p.get("checkpoints", p.get("checkpoints_after", {}))),
            }
        )
    requests = queue.recent(db, 50)
    worker = state.worker
    verify = None if worker is None else worker.last_verify
    env = Environment(loader=PackageLoader("obliviate.serve"), autoescape=True)
    return env.get_template("status.html.j2").render(
        model=model,
        counts=queue.counts(db),
        queue=[r for r in requests if r["status"] in ("queued", "running", "failed")],
        requests=requests,
        history=history,
        verify=verify,
        verify_time=None
        if verify is None
        else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(verify["time"])),
        worker_busy=worker is not None and worker.busy,
        worker_error=None if worker is None else worker.last_error,
    )
