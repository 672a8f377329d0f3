"""Login, token refresh, logout and the current user."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import Api, Call, client_addr
from server.services.auth import RefreshReused, TokenPair
from server.storage.orgs import OrgRepository

api = Api()


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=200)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    refresh_expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
            refresh_expires_in=pair.refresh_expires_in,
        )


class MeOut(BaseModel):
    user_id: int | None
    username: str
    display_name: str
    role: str
    unit_id: int | None
    unit_code: str | None
    unit_name_zh: str | None
    unit_name_en: str | None
    department_id: int | None
    invite_case_id: int | None


@api.route(
    "POST",
    "/auth/login",
    summary="Log in with username and password",
    tags=["auth"],
    body=LoginBody,
    response=TokenOut,
    auth=False,
)
async def login(call: Call) -> TokenOut:
    sv = call.services
    addr = client_addr(call.request, sv.settings.trust_forwarded_for, sv.settings.trusted_proxies)
    async with sv.db.transaction() as s:
        pair = await sv.auth.login(s, call.body.username, call.body.password, addr)
    return TokenOut.of(pair)


@api.route(
    "POST",
    "/auth/refresh",
    summary="Exchange a refresh token (single use) for new tokens",
    tags=["auth"],
    body=RefreshBody,
    response=TokenOut,
    auth=False,
)
async def refresh(call: Call) -> TokenOut:
    reused: RefreshReused | None = None
    async with call.services.db.transaction() as s:
        try:
            pair = await call.services.auth.refresh(s, call.body.refresh_token)
        except RefreshReused as exc:  # the session's revocation is committed, then the refusal answered
            reused = exc
    if reused is not None:
        raise reused
    return TokenOut.of(pair)


@api.route(
    "POST",
    "/auth/logout",
    summary="End this login session (access and refresh tokens stop working)",
    tags=["auth"],
    status=204,
)
async def logout(call: Call) -> web.Response:
    async with call.services.db.transaction() as s:
        await call.services.auth.logout(s, call.me)
    return web.Response(status=204)


@api.route("GET", "/me", summary="The logged-in user", tags=["auth"], response=MeOut)
async def me(call: Call) -> MeOut:
    p = call.me
    unit = None
    if p.unit_id is not None:
        async with call.services.db.transaction() as s:
            unit = await OrgRepository(s).unit(p.unit_id)
    return MeOut(
        user_id=p.user_id,
        username=p.username,
        display_name=p.display_name,
        role=str(p.role),
        unit_id=p.unit_id,
        unit_code=unit.code if unit else None,
        unit_name_zh=unit.name_zh if unit else None,
        unit_name_en=unit.name_en if unit else None,
        department_id=p.department_id,
        invite_case_id=p.invite_case_id,
    )
