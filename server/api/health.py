"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from server.registry import Services

log = logging.getLogger(__name__)


def health_routes(services_key: web.AppKey[Services], openapi: dict[str, object]) -> list[web.RouteDef]:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        sv = request.app[services_key]
        checks: dict[str, str] = {}
        probes = (("database", sv.db.ping), ("object_store", sv.store.ping), ("cluster", sv.signalling.cluster.ping))
        for name, probe in probes:
            try:
                await probe()
                checks[name] = "ok"
            except Exception as exc:  # report any failure as not ready
                log.warning("readiness check %s failed: %s", name, exc)
                checks[name] = "failed"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
        )

    async def metrics(request: web.Request) -> web.Response:
        await request.app[services_key].metrics.refresh_media(request.app[services_key].signalling)
        body = generate_latest(request.app[services_key].metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.json_response(openapi)

    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/api/v1/openapi.json", openapi_json),
    ]
