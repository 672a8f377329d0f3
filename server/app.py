"""The composition root: ``create_app(settings)`` builds and wires everything."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import socketio
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from server.api import auth as auth_api
from server.api import cases as cases_api
from server.api import documents as documents_api
from server.api import experts as experts_api
from server.api import inspections as inspections_api
from server.api import matters as matters_api
from server.api import orgs as orgs_api
from server.api import queue as queue_api
from server.api import recordings as recordings_api
from server.api import sessions as sessions_api
from server.api.headers import secure_headers
from server.api.health import health_routes
from server.api.routing import PRINCIPAL, REQUEST_ID, Api, validation_details
from server.clock import Clock, SystemClock
from server.errors import ApiError
from server.logconfig import quiet_malformed_requests
from server.metrics import Metrics
from server.objectstore import (
    FilesystemObjectStore,
    S3ObjectStore,
    create_object_store,
    object_routes,
)
from server.registry import SERVICES, Services
from server.services.appointments import AppointmentService
from server.services.auth import AuthService, LoginRateLimiter
from server.services.cases import CaseService
from server.services.documents import DocumentService
from server.services.evidence import EvidenceSigner
from server.services.experts import ExpertService
from server.services.inspections import InspectionReports, InspectionService
from server.services.queue import QueueService
from server.services.realtime import RealtimeApplication
from server.services.recording import SessionRecordings
from server.services.session_sweeper import SessionSweeper
from server.services.sessions import SessionService
from server.settings import QueueSettings, Settings
from server.storage.database import Database
from signalling.cluster import RedisCluster
from signalling.server import SignallingConfig, SignallingServer
from signalling.sfu.network import MediaNetworkConfig
from signalling.sfu.udpsend import set_gso
from signalling.turn import IceServerConfig

log = logging.getLogger("server.http")
VERSION = "0.1.0"
BACKGROUND_STOP_TIMEOUT = 10.0
"""Seconds shutdown waits for a cancelled background task (queue scanner, recording jobs/uploads) before going on."""


BACKGROUND = web.AppKey("background", dict[str, asyncio.Task[None]])
"""The app's background tasks by name (filled at start-up: the app itself is frozen by then)."""
QUEUE_SCANNER = "queue-scanner"
RECORDING_UPLOADER = "recording-uploader"
RECORDING_JOBS = "recording-jobs"
SESSION_SWEEPER = "session-sweeper"

ROUTE_MODULES: tuple[Api, ...] = (
    auth_api.api,
    orgs_api.api,
    matters_api.api,
    cases_api.api,
    documents_api.api,
    sessions_api.api,
    queue_api.api,
    recordings_api.api,
    experts_api.api,
    inspections_api.api,
)


def build_services(
    settings: Settings, clock: Clock | None = None, queue_settings: QueueSettings | None = None
) -> Services:
    clock = clock or SystemClock()
    queue_settings = queue_settings or settings.queue
    secret = settings.resolved_secret_key()
    db = Database(settings.resolved_database_url())
    store = create_object_store(
        settings.object_store,
        root=settings.resolved_object_root(),
        secret=secret,
        now=lambda: clock.now().timestamp(),
    )
    a = settings.auth
    auth = AuthService(
        secret=secret,
        clock=clock,
        access_ttl=a.access_token_ttl,
        refresh_ttl=a.refresh_token_ttl,
        invite_ttl=a.invite_ttl,
        limiter=LoginRateLimiter(clock, a.login_max_attempts, a.login_window),
    )
    cases = CaseService(clock=clock, secret=secret)
    documents = DocumentService(db=db, store=store, cases=cases, clock=clock, global_max_size=settings.upload.max_size)
    sessions = SessionService(clock=clock, cases=cases)
    realtime = RealtimeApplication(db=db, auth=auth, sessions=sessions)
    metrics = Metrics()
    recordings = SessionRecordings(
        db=db,
        clock=clock,
        settings=settings.recording,
        spool=settings.resolved_spool_dir(),
        store=store,
        metrics=metrics,
    )
    sig = settings.signalling
    set_gso(settings.media.udp_gso)
    signalling = SignallingServer(
        authenticator=realtime,
        directory=realtime,
        config=SignallingConfig(
            max_participants=sig.max_participants,
            empty_session_timeout=sig.empty_session_timeout,
            chat_max_messages=sig.chat_max_messages,
            chat_window=sig.chat_window,
            allowed_origins=list(sig.allowed_origins),
            ice_servers=[
                IceServerConfig(
                    urls=i.urls, auth_secret=i.auth_secret, username=i.username, credential=i.credential, ttl=i.ttl
                )
                for i in sig.ice_servers
            ],
        ),
        monotonic=clock.monotonic,
        client_manager=(
            socketio.AsyncRedisManager(settings.redis_url, channel=f"{settings.redis_prefix}:socketio")
            if settings.redis_url
            else None
        ),
        cluster=RedisCluster(settings.redis_url, prefix=settings.redis_prefix) if settings.redis_url else None,
        room_observer=recordings,
        media=MediaNetworkConfig(
            bind_addresses=tuple(settings.media.host_addresses),
            allowed_networks=tuple(settings.media.allowed_cidrs),
            max_remote_candidates=settings.media.max_candidates,
            allow_mdns=settings.media.allow_mdns,
            max_sdp_bytes=settings.media.max_sdp_bytes,
            answer_timeout=settings.media.answer_timeout,
        ),
    )
    appointments = AppointmentService(clock=clock, cases=cases, settings=queue_settings.appointments)
    queue = QueueService(
        db=db,
        clock=clock,
        cases=cases,
        sessions=sessions,
        appointments=appointments,
        notifier=signalling,
        settings=queue_settings,
    )
    inspections = InspectionService(
        db=db,
        store=store,
        clock=clock,
        cases=cases,
        sessions=sessions,
        signer=EvidenceSigner(secret),
        max_size=settings.upload.max_size,
    )
    return Services(
        settings,
        clock,
        db,
        store,
        auth,
        cases,
        documents,
        sessions,
        signalling,
        metrics,
        appointments,
        queue,
        recordings,
        ExpertService(clock=clock, cases=cases),
        inspections,
        InspectionReports(inspections=inspections, timezone=queue_settings.timezone),
    )


def openapi_document() -> dict[str, object]:
    merged = Api()
    for module in ROUTE_MODULES:
        merged.endpoints.extend(module.endpoints)
    return merged.openapi(title="CloudWindow API", version=VERSION)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(status: int, code: str, message: str, details: dict[str, object] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message, "details": details or {}}, status=status)


_HTTP_CODES = {
    404: ("route_not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    413: ("payload_too_large", "request body too large"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as ``{code, message, details}``; log unexpected ones with the request id."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except ValidationError as exc:
        return _error_response(422, "validation_error", "input is not valid", validation_details(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, (f"http_{exc.status}", exc.reason))
        response = _error_response(exc.status, code, message)
        if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110 section 15.5.6: a 405 must name what is allowed
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except Exception:
        log.exception("unhandled error", extra={"request_id": request.get(REQUEST_ID)})
        return _error_response(500, "internal_error", "internal error", {"request_id": request.get(REQUEST_ID)})


def _request_middleware(services: Services) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request[REQUEST_ID]
            return response
        finally:
            elapsed = time.perf_counter() - started
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            services.metrics.requests.labels(route, request.method, str(status)).inc()
            services.metrics.latency.labels(route, request.method).observe(elapsed)
            principal = request.get(PRINCIPAL)
            log.info(
                "%s %s %s",
                request.method,
                route,
                status,
                extra={
                    "request_id": request[REQUEST_ID],
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "user_id": principal.user_id if principal else None,
                },
            )

    return middleware


async def _stop_background(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it, at most :data:`BACKGROUND_STOP_TIMEOUT`: a task that does not stop
    (a lost cancellation, a call that ignores it) is logged as an error and left behind, so shutdown never hangs."""
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BACKGROUND_STOP_TIMEOUT)
    if not done:
        log.error(
            "background task %s did not stop within %g s of its cancellation", task.get_name(), BACKGROUND_STOP_TIMEOUT
        )
    elif not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def create_app(
    settings: Settings, *, clock: Clock | None = None, queue_settings: QueueSettings | None = None
) -> web.Application:
    services = build_services(settings, clock, queue_settings)
    quiet_malformed_requests()
    app = web.Application(
        middlewares=[_request_middleware(services), error_middleware],
        client_max_size=1024 * 1024,
    )
    app[SERVICES] = services
    app.on_response_prepare.append(secure_headers)
    for module in ROUTE_MODULES:
        app.add_routes(module.routes(SERVICES))
    app.add_routes(health_routes(SERVICES, openapi_document()))
    if isinstance(services.store, FilesystemObjectStore):
        app.add_routes(object_routes(services.store, services.store.signer))
    services.signalling.attach(app)
    _add_web_client(app, settings.web_client_dist)
    background: dict[str, asyncio.Task[None]] = {}
    app[BACKGROUND] = background

    async def on_startup(_app: web.Application) -> None:
        await services.signalling.start()
        if isinstance(services.store, S3ObjectStore) and settings.object_store.s3.create_bucket:
            await services.store.ensure_bucket()
        if services.queue.settings.scan_interval > 0:
            background[QUEUE_SCANNER] = asyncio.create_task(services.queue.run_scanner(), name=QUEUE_SCANNER)
        background[RECORDING_UPLOADER] = asyncio.create_task(services.recordings.run_uploads(), name=RECORDING_UPLOADER)
        background[RECORDING_JOBS] = asyncio.create_task(services.recordings.run_jobs(), name=RECORDING_JOBS)
        sweeper = SessionSweeper(
            db=services.db,
            sessions=services.sessions,
            is_live=services.signalling.is_live,
            monotonic=services.clock.monotonic,
            empty_timeout=settings.signalling.empty_session_timeout,
        )
        background[SESSION_SWEEPER] = asyncio.create_task(sweeper.run(), name=SESSION_SWEEPER)

    async def on_shutdown(_app: web.Application) -> None:
        await _stop_background(background.get(SESSION_SWEEPER))
        await _stop_background(background.get(QUEUE_SCANNER))
        await services.queue.close()
        await services.signalling.close()
        await _stop_background(background.get(RECORDING_JOBS))
        await services.recordings.close()
        uploader = background.get(RECORDING_UPLOADER)
        if uploader is not None:
            await _stop_background(uploader)
            try:  # what the closed rooms just finished, if the store answers quickly
                await asyncio.wait_for(services.recordings.upload_pass(), 10)
            except Exception:
                log.warning("recording uploads left in the spool for the next start", exc_info=True)

    async def on_cleanup(_app: web.Application) -> None:
        await services.store.close()
        await services.db.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _add_web_client(app: web.Application, dist: Path) -> None:
    index = dist / "index.html"
    if not index.is_file():
        return

    async def spa(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    if (dist / "assets").is_dir():
        app.router.add_static("/assets", dist / "assets")
    app.router.add_get("/", spa)
