"""The application's services, one of each, as the composition root (``server/app.py``) wires them.

A module of its own so that the HTTP edges (``server/api/*``), which take the
services from the request's app, can name their type without importing the
composition root that imports them (that was an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from server.clock import Clock
from server.metrics import Metrics
from server.objectstore import ObjectStore
from server.services.appointments import AppointmentService
from server.services.auth import AuthService
from server.services.cases import CaseService
from server.services.documents import DocumentService
from server.services.experts import ExpertService
from server.services.inspections import InspectionReports, InspectionService
from server.services.queue import QueueService
from server.services.recording import SessionRecordings
from server.services.sessions import SessionService
from server.settings import Settings
from server.storage.database import Database
from signalling.server import SignallingServer

__all__ = ["SERVICES", "Services"]


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    store: ObjectStore
    auth: AuthService
    cases: CaseService
    documents: DocumentService
    sessions: SessionService
    signalling: SignallingServer
    metrics: Metrics
    appointments: AppointmentService
    queue: QueueService
    recordings: SessionRecordings
    experts: ExpertService
    inspections: InspectionService
    reports: InspectionReports


SERVICES = web.AppKey("services", Services)
