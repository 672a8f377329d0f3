"""The matter catalogue: search, detail, import and export."""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import Api, Call, Page, read_body
from server.errors import ApiError, Forbidden, NotFound, UnsupportedMediaType
from server.services import catalogue
from server.services.principal import Role
from server.storage.matters import MatterRepository
from server.storage.orgs import OrgRepository

api = Api()
MATTER_CODE = re.compile(r"[A-Z]{2,4}-\d{3}")
MAX_IMPORT = 5 * 1024 * 1024


class MatterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(default=None, max_length=100)
    department: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["yaml", "csv"] = "yaml"


class ImportResult(BaseModel):
    created: int
    updated: int


@api.route(
    "GET",
    "/matters",
    summary="Search the matter catalogue",
    tags=["matters"],
    query=MatterQuery,
    response=Page[catalogue.MatterSpec],
)
async def list_matters(call: Call) -> Page[catalogue.MatterSpec]:
    q = call.query
    async with call.services.db.transaction() as s:
        repo = MatterRepository(s)
        rows, total = await repo.search(query=q.q, department_code=q.department, limit=q.limit, offset=q.offset)
        items = await repo.checklists([m.id for m in rows])
    return Page[catalogue.MatterSpec](
        items=[catalogue.to_spec(m, items[m.id]) for m in rows], total=total, limit=q.limit, offset=q.offset
    )


@api.route(
    "GET",
    "/matters/{code}",
    summary="One matter with its checklist",
    tags=["matters"],
    response=catalogue.MatterSpec,
)
async def get_matter(call: Call) -> catalogue.MatterSpec:
    async with call.services.db.transaction() as s:
        repo = MatterRepository(s)
        code = call.request.match_info["code"]
        matter = await repo.by_code(code) if MATTER_CODE.fullmatch(code) else None
        if matter is None:
            raise NotFound("no such matter", code="matter_not_found")
        return catalogue.to_spec(matter, list(await repo.checklist(matter.id)))


@api.route(
    "GET",
    "/catalogue/export",
    summary="Export the catalogue as YAML or CSV",
    tags=["matters"],
    query=ExportQuery,
    raw_response={"application/yaml": {}, "text/csv": {}},
)
async def export_catalogue(call: Call) -> web.Response:
    async with call.services.db.transaction() as s:
        spec = await catalogue.export_spec(s)
    if call.query.format == "csv":
        return web.Response(text=catalogue.dump_csv(spec), content_type="text/csv", charset="utf-8")
    return web.Response(text=catalogue.dump_yaml(spec), content_type="application/yaml", charset="utf-8")


@api.route(
    "POST",
    "/catalogue/import",
    summary="Import (upsert) a catalogue file, YAML or CSV (admin)",
    tags=["matters"],
    response=ImportResult,
    raw_body={"application/yaml": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
)
async def import_catalogue(call: Call) -> ImportResult:
    if call.me.role is not Role.ADMIN:
        raise Forbidden("administrators only", code="forbidden")
    request = call.request
    raw = await read_body(request, MAX_IMPORT, "catalogue file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("the file must be UTF-8", code="catalogue_invalid", status=422) from None
    if request.content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        spec = catalogue.parse_yaml(text)
    elif request.content_type == "text/csv":
        spec = catalogue.parse_csv(text)
    else:
        raise UnsupportedMediaType(
            "send application/yaml or text/csv",
            code="unsupported_content_type",
            details={"got": request.content_type},
        )
    async with call.services.db.transaction() as s:
        counts = await catalogue.import_spec(s, spec)
    return ImportResult(**counts)


class CentreOut(BaseModel):
    """A centre that can handle a matter for the caller's unit: a ``centre_code`` for ``POST /cases``."""

    code: str
    name_zh: str
    name_en: str
    tier: int
    department_id: int
    department_name_zh: str
    department_name_en: str
    #: The one ``POST /cases`` picks without a ``centre_code`` (the nearest).
    default: bool


class CentresOut(BaseModel):
    items: list[CentreOut]


@api.route(
    "GET",
    "/matters/{code}/centres",
    summary="Where the matter can be handled from the caller's unit (choices for centre_code), nearest first",
    tags=["matters"],
    response=CentresOut,
)
async def matter_centres(call: Call) -> CentresOut:
    async with call.services.db.transaction() as s:
        code = call.request.match_info["code"]
        matter = await MatterRepository(s).by_code(code) if MATTER_CODE.fullmatch(code) else None
        if matter is None:
            raise NotFound("no such matter", code="matter_not_found")
        orgs = OrgRepository(s)
        unit = await orgs.unit(call.me.unit_id) if call.me.unit_id is not None else None
        if unit is None:
            return CentresOut(items=[])
        out: list[CentreOut] = []
        # The same candidates, in the same order, as CaseService.create: the unit itself, then its ancestors.
        for candidate in [unit, *await orgs.ancestors(unit)]:
            department = await orgs.department_by_code(candidate.id, matter.department_code)
            if department is not None:
                out.append(
                    CentreOut(
                        code=candidate.code,
                        name_zh=candidate.name_zh,
                        name_en=candidate.name_en,
                        tier=candidate.tier,
                        department_id=department.id,
                        department_name_zh=department.name_zh,
                        department_name_en=department.name_en,
                        default=not out,
                    )
                )
        return CentresOut(items=out)
