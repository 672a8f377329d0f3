"""Declared endpoints: one table drives routing, validation and the OpenAPI document.

Each endpoint names its request body, query and response models (pydantic);
the wrapper parses and validates them, authenticates the caller and hands
the handler a :class:`Call`.  ``docs/api.md`` and ``/api/v1/openapi.json``
are generated from the same declarations, so they cannot drift apart.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import core_schema

from server.errors import ApiError, BadRequest, Forbidden, Unauthorized, UnsupportedMediaType, ValidationFailed
from server.services.principal import Principal
from server.structured_input import StructureRefused, check_structure

if TYPE_CHECKING:
    from server.registry import Services

API_PREFIX = "/api/v1"
#: Ids are 32-bit on PostgreSQL; anything larger cannot exist.
MAX_DB_ID = 2**31 - 1
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
#: Largest JSON body accepted (uploads use multipart streaming instead).
MAX_JSON_BODY = 256 * 1024

T = TypeVar("T")


#: A path parameter named ``*_id`` is a database id: declared as such, and checked before the handler runs.
ID_PARAM = re.compile(r"\w+_id")
#: The OpenAPI schema of such an id.
DB_ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_DB_ID}
#: The request body of an upload: a multipart form whose part ``file`` is required.
MULTIPART_FILE: dict[str, Any] = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    }
}


def binary_content(*types: str) -> dict[str, Any]:
    """The OpenAPI ``content`` of a download that is one of ``types``."""
    return {t: {"schema": {"type": "string", "format": "binary"}} for t in types}


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query field's JSON schema as a query parameter: absent is its ``None``, which a query string cannot say."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    branches = schema.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del schema["anyOf"]
        schema = {**schema, **rest[0]} if len(rest) == 1 else {**schema, "anyOf": rest}
    return schema


def is_db_id(raw: str) -> bool:
    """ASCII digits naming an id that can exist (``isdigit`` alone accepts '²')."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 10 and 0 < int(raw) <= MAX_DB_ID


class _ResponseFieldsRequired(GenerateJsonSchema):
    """In serialisation mode every field is required: the server always sends it, default or not."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        if self.mode == "serialization":
            return not field.get("serialization_exclude")
        return super().field_is_required(field, total)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass
class Call:
    request: web.Request
    services: Services
    principal: Principal | None
    body: Any
    query: Any

    @property
    def me(self) -> Principal:
        assert self.principal is not None
        return self.principal

    def path_int(self, name: str) -> int:
        raw = self.request.match_info[name]
        if not is_db_id(raw):
            raise ValidationFailed(f"{name} must be a positive integer", code="invalid_path_parameter")
        return int(raw)


Handler = Callable[[Call], Awaitable[web.StreamResponse | BaseModel | dict[str, Any]]]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    auth: bool
    #: Extra OpenAPI request body description for non-JSON bodies (multipart, YAML, CSV).
    raw_body: dict[str, Any] | None = None
    raw_response: dict[str, Any] | None = None
    errors: tuple[int, ...] = field(default_factory=tuple)
    #: Whether a session made from an invite (expert, inspector, guest) may call it at all.
    invitees: bool = True
    #: Other success statuses with the same body (e.g. 200 for an idempotent repeat of a 201 create).
    also: tuple[int, ...] = ()


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def client_addr(request: web.Request, trust_forwarded: bool, trusted_proxies: Sequence[str] = ()) -> str | None:
    """The client's address: the peer's, or behind trusted proxies, read from X-Forwarded-For from the right.

    Each proxy *appends* the address it received the request from, so only the entries on the right were
    written by proxies we run; anything to their left was sent by the client and proves nothing (taking the
    first entry let a client choose its own address, past the login limiter and into the audit).  The
    rightmost entry is what our proxy saw; entries inside ``trusted_proxies`` are further proxies of ours and
    are skipped.  A malformed entry stops the walk at the last address a trusted proxy vouched for.
    """
    addr = request.remote
    if not trust_forwarded:
        return addr
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", ()) for h in v.split(",")]
    proxies = _networks(tuple(trusted_proxies))
    for hop in reversed([h for h in hops if h]):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            break
        addr = str(ip)
        if not any(ip in n for n in proxies):
            break
    return addr[:64] if addr else addr


def validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "errors": [
            {"loc": [str(p) for p in e["loc"]], "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
    }


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The whole request body, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = ApiError(f"{what} too large", code="payload_too_large", status=413, details={"limit": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != "application/json":
        raise UnsupportedMediaType(
            "send the body as application/json", code="unsupported_content_type", details={"got": ctype}
        )
    raw = await read_body(request, MAX_JSON_BODY, "JSON body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("body is not valid JSON", code="malformed_json", details={"error": str(exc)[:200]}) from None
    try:
        check_structure(data)
    except StructureRefused as exc:
        if exc.reason == "too_deep":
            raise ValidationFailed(str(exc), code="json_too_deep", details={"at": exc.path}) from None
        raise ValidationFailed(str(exc), code="validation_error", details={"at": exc.path}) from None
    return data


class Api:
    """A module's endpoints.

    ``invitees=False``: none of them is open to a session made from an invite (an expert, an inspector or a
    guest sees only what its one case needs: the org tree, windows, queues, users and audit trails are staff
    matters); a single route may say otherwise with its own ``invitees``.
    """

    def __init__(self, *, invitees: bool = True) -> None:
        self.endpoints: list[Endpoint] = []
        self.invitees = invitees

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tags: Sequence[str] = (),
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        auth: bool = True,
        raw_body: dict[str, Any] | None = None,
        raw_response: dict[str, Any] | None = None,
        invitees: bool | None = None,
        also: Sequence[int] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method,
                    API_PREFIX + path,
                    handler,
                    summary,
                    tuple(tags),
                    body,
                    query,
                    response,
                    status,
                    auth,
                    raw_body,
                    raw_response,
                    invitees=self.invitees if invitees is None else invitees,
                    also=tuple(also),
                )
            )
            return handler

        return register

    def routes(self, services_key: web.AppKey[Services]) -> list[web.RouteDef]:
        return [web.route(e.method, e.path, self._wrap(e, services_key)) for e in self.endpoints]

    @staticmethod
    def _wrap(
        e: Endpoint, services_key: web.AppKey[Services]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        ids = [n for n in re.findall(r"\{(\w+)", e.path) if ID_PARAM.fullmatch(n)]

        async def handle(request: web.Request) -> web.StreamResponse:
            services = request.app[services_key]
            principal = None
            if e.auth:
                header = request.headers.get("Authorization", "")
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthorized("log in first (Authorization: Bearer <token>)", code="auth_required")
                addr = client_addr(request, services.settings.trust_forwarded_for, services.settings.trusted_proxies)
                principal = services.auth.authenticate_cached(token.strip(), addr)
                if principal is None:
                    async with services.db.read() as s:
                        principal = await services.auth.authenticate(s, token.strip(), addr)
                request[PRINCIPAL] = principal
                if principal.invite_id is not None and not e.invitees:
                    raise Forbidden("not open to invited participants", code="forbidden")
            for name in ids:
                if not is_db_id(request.match_info[name]):
                    raise ValidationFailed(f"{name} must be a positive integer", code="invalid_path_parameter")
            query = None
            if e.query is not None:
                if any("\x00" in k or "\x00" in v for k, v in request.query.items()):
                    raise ValidationFailed("query may not contain NUL characters", code="invalid_query")
                try:
                    query = e.query.model_validate(dict(request.query))
                except ValidationError as exc:
                    raise ValidationFailed(
                        "query parameters are not valid",
                        code="invalid_query",
                        details=validation_details(exc),
                    ) from None
            body = None
            if e.body is not None:
                data = await read_json(request)
                try:
                    body = e.body.model_validate_json(json.dumps(data), strict=True)
                except ValidationError as exc:
                    raise ValidationFailed(
                        "request body is not valid", code="validation_error", details=validation_details(exc)
                    ) from None
            result = await e.handler(Call(request, services, principal, body, query))
            if isinstance(result, web.StreamResponse):
                return result
            if isinstance(result, BaseModel):
                return web.Response(text=result.model_dump_json(), status=e.status, content_type="application/json")
            return web.json_response(result, status=e.status)

        handle.__name__ = e.handler.__name__
        return handle

    # -- OpenAPI ----------------------------------------------------------

    def openapi(self, *, title: str, version: str) -> dict[str, Any]:
        # Request bodies as the server validates them; responses as it serialises them (a field with a default is
        # then required: the server always sends it).  pydantic names a model that differs between the two
        # ``-Input``/``-Output``.
        modes: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorBody, "serialization")}
        for e in self.endpoints:
            for m, mode in ((e.body, "validation"), (e.response, "serialization")):
                if isinstance(m, type) and issubclass(m, BaseModel):
                    modes.add((m, mode))  # type: ignore[arg-type]
        ordered = sorted(modes, key=lambda mm: (mm[0].__name__, mm[1]))
        keys, defs = models_json_schema(
            ordered, ref_template="#/components/schemas/{model}", schema_generator=_ResponseFieldsRequired
        )
        schemas = defs.get("$defs", {})

        def ref(m: type[BaseModel], mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
            return keys[(m, mode)]

        error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorBody)}}}
        paths: dict[str, dict[str, Any]] = {}
        for e in self.endpoints:
            path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", e.path)
            params: list[dict[str, Any]] = [
                {
                    "name": n,
                    "in": "path",
                    "required": True,
                    "schema": dict(DB_ID_SCHEMA) if ID_PARAM.fullmatch(n) else {"type": "string"},
                }
                for n in re.findall(r"\{(\w+)\}", path)
            ]
            if e.query is not None:
                for name, f in e.query.model_fields.items():
                    params.append(
                        {
                            "name": name,
                            "in": "query",
                            "required": f.is_required(),
                            "schema": _query_schema(e.query.model_json_schema()["properties"][name]),
                        }
                    )
            op: dict[str, Any] = {
                "summary": e.summary,
                "operationId": e.handler.__name__,
                "tags": list(e.tags),
                "parameters": params,
                "responses": {"4XX": error},
            }
            if e.auth:
                op["security"] = [{"bearer": []}]
            if e.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(e.body, "validation")}},
                }
            elif e.raw_body is not None:
                op["requestBody"] = {"required": True, "content": e.raw_body}
            ok: dict[str, Any] = {"description": "ok"}
            if isinstance(e.response, type) and issubclass(e.response, BaseModel):
                ok["content"] = {"application/json": {"schema": ref(e.response)}}
            elif e.raw_response is not None:
                ok["content"] = e.raw_response
            for status in (e.status, *e.also):
                op["responses"][str(status)] = {"description": "no content"} if status == 204 else ok
            paths.setdefault(path, {})[e.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            },
        }
