"""The FastAPI app: routes, error rendering, body-size limit and /health."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from kombu.exceptions import OperationalError as BrokerError
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as db_errors
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import facequeue
from api import batches, faces, recognition, v1, v2
from api.deps import check_request_strings
from api.logs import install_redaction
from api.vendors import azure, betaface_xml, facepp, liveness, sightcorp
from facequeue import metrics
from facequeue.settings import get_settings
from schema import answers
from schema.db import get_engine
from schema.errors import ErrorCode, FacequeueError
from workers.celery_app import WORKER_QUEUES
from workers.celery_app import app as celery_app
from workers.heartbeat import alive_workers

log = logging.getLogger(__name__)
# The web console: static ES modules and CSS shipped in the package, calling only the public API.
CONSOLE = Path(__file__).parent / "console"
# The page holds an API key: it runs only its own files, talks only to this api and may not be framed.
# Images may come from anywhere (a URL upload shows the photo from its own address).
CONSOLE_POLICY = (
    "default-src 'self'; img-src * data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
V1_PREFIXES = ("/v1/", "/service_json.svc/")
RETRY_AFTER_S = 2
# A passing outage of the database or the broker: the client should retry, it is not a bug.
OUTAGES = (
    db_errors.OperationalError,
    db_errors.InterfaceError,
    db_errors.TimeoutError,
    db_errors.DisconnectionError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
)


def error_response(
    request: Request, code: ErrorCode, message: str | None = None, retry_after: int | None = None
) -> Response:
    message = message or code.message
    metrics.API_ERRORS.labels(code.name).inc()
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    path = request.url.path
    vendor = None
    if path.startswith(betaface_xml.PREFIX + "/"):
        vendor = betaface_xml.error_response(path, code, message)
    elif path.startswith(sightcorp.PREFIX):  # e.g. a GET: Sightcorp's 1200 "not a POST request"
        vendor = sightcorp.error_for(code, message)
    elif path.startswith(facepp.PREFIX + "/"):
        vendor = facepp.error_response(code, message)
    elif path.startswith(liveness.PREFIX):
        vendor = liveness.error_response(code, message)
    if vendor is not None:
        vendor.headers.update(headers or {})
        return vendor
    if request.url.path.startswith(V1_PREFIXES):  # Betaface clients read int_response, on HTTP 200
        return JSONResponse({"int_response": code.v1, "string_response": message}, headers=headers)
    return JSONResponse(
        {"error": {"code": code.name, "message": message}}, status_code=code.http_status, headers=headers
    )


class RequestTimer:
    """Time every request into facequeue_request_seconds, labelled by its route template (not its path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(scope["method"], getattr(route, "path", "unmatched")).observe(
                time.perf_counter() - start
            )


class BodyLimit:
    """Refuse bodies over the limit while they stream in, not after they are buffered whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send, f"{int(declared)} bytes")
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._too_large(scope, receive, send, f"more than {self.limit} bytes")

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        response = error_response(
            Request(scope), ErrorCode.IMAGE_TOO_LARGE, f"request body is {size}; the limit is {self.limit}"
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class Health(BaseModel):
    api: str
    database: str = Field(description='"ok" or "error: <kind>"')
    broker: str = Field(description='"ok" or "error: <kind>"')
    workers: int = Field(description="workers that sent a heartbeat in the last 15 s")


# Documented ways to send the key (api/deps.authenticate reads them): the Authorize button in /docs.
# auto_error=False: these only describe; authenticate() answers UNAUTHORIZED in our own error shape.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the tenant's API key")
API_KEY_QUERY = APIKeyQuery(name="api_key", auto_error=False, description="the same key, Betaface style")
DOCUMENTED_KEYS = [Security(API_KEY_HEADER), Security(API_KEY_QUERY)]


class CatchAll:
    """Answer INTERNAL_ERROR for a bug and keep the connection: the error is logged here and not raised on.

    Starlette's own handler for `Exception` sits in ServerErrorMiddleware, which re-raises after answering;
    the server then treats the connection as broken and the client's next keep-alive request fails.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            if started:  # half an answer is out: only the server can end this connection
                raise
            await error_response(Request(scope), ErrorCode.INTERNAL_ERROR)(scope, receive, send)


def create_app() -> FastAPI:
    settings = get_settings()
    install_redaction()  # after the server configured logging: uvicorn calls this factory then
    # Swagger UI and ReDoc from files shipped in the install: /docs works offline.
    app = FastAPIOffline(
        dependencies=[Depends(check_request_strings)],  # schema.inputs' rule for path, query and form
        title="facequeue",
        version=facequeue.__version__,
        description="Self-hosted face analysis: upload, get a uid at once, poll for the result. "
        "v2 errors answer `{error: {code, message}}` with the HTTP status; v1 (Betaface) answers HTTP 200 "
        "with a negative `int_response`.",
    )
    state = metrics.CollectorRegistry(auto_describe=False)
    state.register(metrics.StateCollector(WORKER_QUEUES))

    # Routes are matched in order, one by one: the busiest (health checks, v2 uploads and polls) first.
    @app.get("/health", tags=["operations"], response_model=Health, responses={503: {"model": Health}})
    def health() -> JSONResponse:
        """200 when the api, the database and the broker answer and at least one worker is consuming."""
        status: dict[str, object] = {"api": "ok", "database": "ok", "broker": "ok", "workers": 0}
        try:
            with get_engine().connect() as connection:
                connection.execute(text("SELECT 1"))
            status["workers"] = alive_workers()
        except Exception as exc:
            status["database"] = f"error: {type(exc).__name__}"
        try:
            with celery_app.pool.acquire(
                block=True, timeout=2
            ) as connection:  # pooled: no new socket per call
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            status["broker"] = f"error: {type(exc).__name__}"
        healthy = status["database"] == status["broker"] == "ok" and status["workers"]
        return JSONResponse(status, status_code=200 if healthy else 503)

    @app.get("/health/live", tags=["operations"])
    def live() -> dict:
        """200 while this api process serves (for container liveness checks; /health is readiness)."""
        return {"api": "ok"}

    @app.get("/metrics", tags=["operations"])
    def prometheus_metrics() -> Response:
        """Prometheus text format: this api's requests and uploads, queue depths and jobs by status."""
        body = metrics.render(metrics.process_registry(), state)
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)

    for router in (v2.router, recognition.router, faces.router, batches.router):
        app.include_router(router, dependencies=DOCUMENTED_KEYS, responses=answers.ERRORS)
    for router in v1.make_routers():
        app.include_router(router, dependencies=DOCUMENTED_KEYS, responses={200: {"model": answers.V1Answer}})
    # Vendor adapters answer in their vendor's shapes (their own errors too).
    app.include_router(liveness.router)
    app.include_router(sightcorp.router)
    app.include_router(facepp.router)
    app.include_router(azure.router)
    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html", headers={"Content-Security-Policy": CONSOLE_POLICY})

    # base64 inflates by 4/3; leave room for the JSON around it.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes * 4 // 3 + 64 * 1024)
    app.add_middleware(RequestTimer)
    app.add_middleware(CatchAll)  # outermost of ours: also catches what BodyLimit lets through

    @app.exception_handler(FacequeueError)
    def on_facequeue_error(request: Request, exc: FacequeueError) -> Response:
        return error_response(request, exc.code, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}".removeprefix(": ") for e in exc.errors()[:5]
        )
        return error_response(request, ErrorCode.INVALID_REQUEST, details or None)

    @app.exception_handler(StarletteHTTPException)
    def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
        return error_response(request, code, str(exc.detail))

    def on_outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s answered 503: %s: %s", request.url.path, type(exc).__name__, exc)
        response = error_response(request, ErrorCode.SERVICE_UNAVAILABLE)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    for outage in OUTAGES:
        app.add_exception_handler(outage, on_outage)

    return app
