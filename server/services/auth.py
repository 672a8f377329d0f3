"""Login, tokens, logout, invites and the login rate limit.

Access tokens are short-lived JWTs (HS256) naming a login session; every
request checks the session is still live, so logout (revoking the session)
takes effect at once.  The check's answer is kept per session for at most
:data:`SESSION_CACHE_TTL` seconds (:class:`SessionCache`), so a busy client
does not cost three lookups a request: a logout or invite revocation in this
process is honoured on the next request; one made by another server process,
or an account disabled in the database, within that bound.  Refresh tokens
rotate on every use: a refresh token works once.  Each is
``<session id>.<generation>.<MAC>`` (HMAC-SHA256 under a key derived from the
secret) and only its SHA-256 is stored, so the server can tell a token it
issued earlier for a session from a forged one: presenting a rotated token
again (a stolen copy used after, or before, its owner) revokes the whole
session, as RFC 6819 section 5.2.2.3 recommends.  A session made from an
invite stops refreshing when the invite is revoked.  Invite tokens are
likewise random, stored hashed, single-use, expiring and revocable; a
redeemed invite becomes a login session scoped to one case.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import ApiError, Forbidden, TooManyRequests, Unauthorized, ValidationFailed
from server.services.principal import Principal, Role
from server.storage.models import AuthSession, Invite, User
from server.storage.orgs import OrgRepository
from server.storage.users import AuthSessionRepository, InviteRepository, UserRepository

_hasher = PasswordHasher()
#: Verified against when the username does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
JWT_ALG = "HS256"
JWT_AUDIENCE = "cloudwindow"
#: Seconds a login session's validity is trusted without asking the database again (see :class:`SessionCache`).
SESSION_CACHE_TTL = 2.0
#: Access tokens whose signature check is remembered (see ``AuthService._session_id``).
VERIFIED_TOKENS = 10_000


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RefreshReused(Unauthorized):
    """A rotated refresh token came back; the session was revoked and that revocation must be committed."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


class LoginRateLimiter:
    """Sliding-window count of failed logins per username and per client address.

    In-process: with several server processes each keeps its own window (the
    limit then holds per process); a Redis-backed limiter is planned with the
    Redis manager.
    """

    def __init__(self, clock: Clock, max_attempts: int, window: float) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock.monotonic() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    def check(self, *keys: str) -> None:
        for key in keys:
            q = self._recent(key)
            if len(q) >= self.max_attempts:
                retry = int(q[0] + self.window - self.clock.monotonic()) + 1
                raise TooManyRequests(
                    "too many failed logins, try again later",
                    code="login_rate_limited",
                    details={"retry_after": retry},
                )

    def failed(self, *keys: str) -> None:
        now = self.clock.monotonic()
        for key in keys:
            self._recent(key).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of usernames
            for k in [k for k, q in self._failures.items() if not q]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    invite_id: int | None
    #: ``clock.monotonic()`` after which the database is asked again.
    fresh_until: float
    #: The login session's own end.
    expires_at: datetime


class SessionCache:
    """Principals of recently checked live login sessions, each trusted for ``ttl`` seconds.

    Revocations made through this process (:meth:`forget_session`,
    :meth:`forget_invite`) apply at once and leave a tombstone for ``ttl``
    seconds, so a lookup that read the session before the revocation
    committed cannot put it back.  Revocations this process does not see
    (another process's logout, an account disabled in the database) apply
    within ``ttl``.  ``ttl`` 0 turns the cache off.  Bounded to ``max_entries``
    (the oldest go first).
    """

    def __init__(self, clock: Clock, ttl: float, max_entries: int = 10_000) -> None:
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._gone_sessions: dict[str, float] = {}
        self._gone_invites: dict[int, float] = {}

    def get(self, session_id: str) -> Principal | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if entry.fresh_until <= self.clock.monotonic() or entry.expires_at <= self.clock.now():
            del self._entries[session_id]
            return None
        return entry.principal

    def put(self, principal: Principal, invite_id: int | None, expires_at: datetime) -> None:
        if self.ttl <= 0:
            return
        now = self.clock.monotonic()
        self._prune(now)
        sid = principal.session_id
        if sid in self._gone_sessions or (invite_id is not None and invite_id in self._gone_invites):
            return
        self._entries[sid] = _Cached(replace(principal, client_addr=None), invite_id, now + self.ttl, expires_at)
        self._entries.move_to_end(sid)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_session(self, session_id: str) -> None:
        self._entries.pop(session_id, None)
        self._gone_sessions[session_id] = self.clock.monotonic() + self.ttl

    def forget_invite(self, invite_id: int) -> None:
        for sid in [k for k, e in self._entries.items() if e.invite_id == invite_id]:
            del self._entries[sid]
        self._gone_invites[invite_id] = self.clock.monotonic() + self.ttl

    def _prune(self, now: float) -> None:
        for sid in [k for k, until in self._gone_sessions.items() if until <= now]:
            del self._gone_sessions[sid]
        for invite_id in [k for k, until in self._gone_invites.items() if until <= now]:
            del self._gone_invites[invite_id]


class AuthService:
    def __init__(
        self,
        *,
        secret: str,
        clock: Clock,
        access_ttl: int,
        refresh_ttl: int,
        invite_ttl: int,
        limiter: LoginRateLimiter,
        session_cache_ttl: float = SESSION_CACHE_TTL,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.invite_ttl = invite_ttl
        self.limiter = limiter
        self.session_cache = SessionCache(clock, session_cache_ttl)
        #: ``(session id, exp)`` of access tokens whose signature, audience and type were checked (a token's
        #: signature does not change; expiry is still checked on every use). Bounded, the oldest go first.
        self._verified: OrderedDict[str, tuple[str, int]] = OrderedDict()

    # -- tokens -----------------------------------------------------------

    def _access_token(self, claims: dict[str, Any]) -> str:
        now = self.clock.now()
        payload = {
            **claims,
            "aud": JWT_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.access_ttl)).timestamp()),
            "typ": "access",
        }
        return jwt.encode(payload, self.secret, algorithm=JWT_ALG)

    def _refresh_token(self, session_id: str, generation: int) -> str:
        key = hashlib.sha256(b"cloudwindow refresh token\0" + self.secret.encode()).digest()
        mac = hmac.new(key, f"{session_id}\0{generation}".encode(), hashlib.sha256).hexdigest()
        return f"{session_id}.{generation}.{mac}"

    def _issued_refresh_token(self, token: str) -> tuple[str, int] | None:
        """``(session id, generation)`` if this server made ``token`` (current or rotated away); None if forged."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit() or len(parts[1]) > 9:
            return None
        session_id, generation = parts[0], int(parts[1])
        if not hmac.compare_digest(self._refresh_token(session_id, generation), token):
            return None
        return session_id, generation

    async def _open_session(
        self, s: AsyncSession, *, user_id: int | None, invite_id: int | None, client_addr: str | None
    ) -> TokenPair:
        now = self.clock.now()
        session_id = str(uuid.uuid4())
        refresh = self._refresh_token(session_id, 0)
        row = AuthSession(
            id=session_id,
            user_id=user_id,
            invite_id=invite_id,
            refresh_hash=token_hash(refresh),
            created_at=now,
            expires_at=now + timedelta(seconds=self.refresh_ttl),
            revoked_at=None,
            client_addr=client_addr,
        )
        await AuthSessionRepository(s).add(row)
        return TokenPair(self._access_token({"sid": row.id}), refresh, self.access_ttl, self.refresh_ttl)

    async def login(self, s: AsyncSession, username: str, password: str, client_addr: str | None) -> TokenPair:
        keys = (f"user:{username.lower()}", f"addr:{client_addr}")
        self.limiter.check(*keys)
        user = await UserRepository(s).by_username(username)
        ok = verify_password(user.password_hash if user else None, password)
        if not ok or user is None or not user.active:
            self.limiter.failed(*keys)
            raise Unauthorized("wrong username or password", code="invalid_credentials")
        self.limiter.succeeded(keys[0])
        return await self._open_session(s, user_id=user.id, invite_id=None, client_addr=client_addr)

    async def refresh(self, s: AsyncSession, refresh_token: str) -> TokenPair:
        """Rotate: the pair for the next generation.  A rotated token presented again revokes its session.

        The caller commits even when this raises ``refresh_reused`` (the revocation must stick): see
        ``server/api/auth.py``.
        """
        repo = AuthSessionRepository(s)
        invalid = Unauthorized("refresh token is invalid, expired or already used", code="refresh_invalid")
        issued = self._issued_refresh_token(refresh_token)
        if issued is None:
            raise invalid
        session_id, generation = issued
        row = await repo.get(session_id, for_update=True)
        now = self.clock.now()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise invalid
        if not hmac.compare_digest(row.refresh_hash, token_hash(refresh_token)):
            # Ours, for this live session, but not its current token: it was rotated away, so two parties hold
            # the session's tokens.  End the session for both (RFC 6819 section 5.2.2.3).
            self.session_cache.forget_session(row.id)
            row.revoked_at = now
            await s.flush()
            raise RefreshReused("refresh token was already used; the session has been ended", code="refresh_invalid")
        if row.invite_id is not None:
            invite = await InviteRepository(s).get(row.invite_id)
            if invite is None or invite.revoked_at is not None:
                raise invalid
        new_refresh = self._refresh_token(row.id, generation + 1)
        row.refresh_hash = token_hash(new_refresh)
        await s.flush()
        remaining = int((row.expires_at - now).total_seconds())
        return TokenPair(self._access_token({"sid": row.id}), new_refresh, self.access_ttl, remaining)

    async def logout(self, s: AsyncSession, principal: Principal) -> None:
        self.session_cache.forget_session(principal.session_id)
        await AuthSessionRepository(s).revoke(principal.session_id, self.clock.now())

    def authenticate_cached(self, token: str, client_addr: str | None) -> Principal | None:
        """The principal of a valid access token whose session was checked recently; None means ask the database.

        Raises 401 for a token that is malformed, forged or expired, like :meth:`authenticate`.
        """
        sid = self._session_id(token)
        principal = self.session_cache.get(sid)
        return replace(principal, client_addr=client_addr) if principal is not None else None

    async def authenticate(self, s: AsyncSession, token: str, client_addr: str | None) -> Principal:
        """Turn a bearer access token into a principal, or raise 401."""
        found = await AuthSessionRepository(s).with_user(self._session_id(token))
        row = found[0] if found is not None else None
        if found is None or row is None or row.revoked_at is not None or row.expires_at <= self.clock.now():
            raise Unauthorized("session has ended; log in again", code="session_revoked")
        principal = await self._principal(s, row, client_addr, loaded=(found[1], found[2]))
        self.session_cache.put(principal, row.invite_id, row.expires_at)
        return principal

    def _session_id(self, token: str) -> str:
        """The login session an access token names, after checking its signature, type and expiry."""
        known = self._verified.get(token)
        if known is None:
            known = self._verify(token)
            self._verified[token] = known
            while len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        sid, exp = known
        # Expiry is checked against the injected clock, not the wall clock.
        if exp <= int(self.clock.now().timestamp()):
            raise Unauthorized("access token has expired; refresh it", code="token_expired")
        return sid

    def _verify(self, token: str) -> tuple[str, int]:
        """``(session id, exp)`` of an access token with a good signature (raises 401 otherwise)."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALG],
                audience=JWT_AUDIENCE,
                # Expiry and issue time are checked against the injected clock below, not the wall clock.
                options={"require": ["exp", "iat", "sid", "typ"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise Unauthorized("access token is malformed or its signature is wrong", code="token_invalid") from None
        if claims.get("typ") != "access":
            raise Unauthorized("not an access token", code="token_invalid")
        return str(claims["sid"]), int(claims["exp"])

    async def principal_for_session(self, s: AsyncSession, session_id: str) -> Principal:
        """The principal of a live login session, by its id (another process authenticated its token)."""
        await self.check_session(s, session_id)
        row = await AuthSessionRepository(s).get(session_id)
        assert row is not None
        return await self._principal(s, row, None)

    async def check_session(self, s: AsyncSession, session_id: str) -> None:
        """Raise 401 if the login session has ended (logout, expiry, revoked invite)."""
        row = await AuthSessionRepository(s).get(session_id)
        if row is None or row.revoked_at is not None or row.expires_at <= self.clock.now():
            raise Unauthorized("session has ended; log in again", code="session_revoked")
        if row.invite_id is not None:
            invite = await InviteRepository(s).get(row.invite_id)
            if invite is None or invite.revoked_at is not None:
                raise Unauthorized("the invite behind this session was revoked", code="session_revoked")

    async def _principal(
        self,
        s: AsyncSession,
        row: AuthSession,
        client_addr: str | None,
        *,
        loaded: tuple[User | None, str | None] | None = None,
    ) -> Principal:
        """The principal of a login session (``loaded``: its account and unit path, when already read).

        A session opened from an invite carries the invite's role and its one
        case, never the rights of the account it names: an invite to an admin
        still only reads its case.  The account (if any) is kept for the audit.
        """
        user: User | None
        unit_path: str | None = None
        if loaded is not None:
            user, unit_path = loaded
        else:
            user = await UserRepository(s).get(row.user_id) if row.user_id is not None else None
        if user is not None and not user.active:
            raise Unauthorized("account is disabled", code="account_disabled")
        if row.invite_id is None:
            if user is None:
                raise Unauthorized("session has no user", code="session_revoked")
            if unit_path is None:
                unit = await OrgRepository(s).unit(user.unit_id)
                unit_path = unit.path if unit else ""
            return Principal(
                user_id=user.id,
                username=user.username,
                display_name=user.display_name,
                role=Role(user.role),
                unit_id=user.unit_id,
                unit_path=unit_path,
                department_id=user.department_id,
                session_id=row.id,
                client_addr=client_addr,
            )
        invite = await InviteRepository(s).get(row.invite_id)
        if invite is None or invite.revoked_at is not None:
            raise Unauthorized("the invite behind this session was revoked", code="session_revoked")
        return Principal(
            user_id=user.id if user else None,
            username=user.username if user else f"invite-{invite.id}",
            display_name=user.display_name if user else invite.display_name,
            role=Role(invite.role),
            unit_id=None,
            unit_path="",
            department_id=None,
            session_id=row.id,
            invite_case_id=invite.case_id,
            invite_session_id=invite.session_id,
            invite_id=invite.id,
            client_addr=client_addr,
        )

    # -- invites ----------------------------------------------------------

    async def create_invite(
        self,
        s: AsyncSession,
        *,
        case_id: int,
        created_by: Principal,
        role: Role,
        display_name: str,
        invitee_user_id: int | None,
        ttl: int | None,
        session_id: int | None = None,
        expert_id: int | None = None,
    ) -> tuple[Invite, str]:
        """Create an invite; the plain token is returned once and never stored."""
        if created_by.user_id is None:
            raise Forbidden("only account holders can invite", code="forbidden")
        if invitee_user_id is not None:
            invitee = await UserRepository(s).get(invitee_user_id)
            if invitee is None:
                raise ValidationFailed(
                    "no such user", code="user_not_found", details={"invitee_user_id": invitee_user_id}
                )
            if invitee.role != str(role):
                raise ValidationFailed(
                    "the invited account's role differs from the invite's role",
                    code="invalid_invite_role",
                    details={"account_role": invitee.role, "invite_role": str(role)},
                )
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        invite = Invite(
            token_hash=token_hash(token),
            case_id=case_id,
            role=str(role),
            display_name=display_name,
            invitee_user_id=invitee_user_id,
            created_by=created_by.user_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl or self.invite_ttl),
            used_at=None,
            revoked_at=None,
            session_id=session_id,
            expert_id=expert_id,
        )
        await InviteRepository(s).add(invite)
        return invite, token

    async def redeem_invite(
        self,
        s: AsyncSession,
        *,
        case_id: int | None,
        token: str,
        client_addr: str | None,
        session_id: int | None = None,
    ) -> tuple[Invite, TokenPair]:
        """Redeem through the case's link (``case_id``) or the session's link (``session_id``)."""
        repo = InviteRepository(s)
        invite = await repo.by_token_hash(token_hash(token))
        if invite is None:
            raise Unauthorized("invite link is not valid", code="invite_invalid")
        if (case_id is not None and invite.case_id != case_id) or (
            session_id is not None and invite.session_id != session_id
        ):
            raise Forbidden("this invite is for another session", code="invite_wrong_scope")
        if invite.revoked_at is not None:
            raise ApiError("this invite was revoked", code="invite_revoked", status=410)
        if invite.used_at is not None:
            raise ApiError("this invite was already used", code="invite_used", status=410)
        now = self.clock.now()
        if invite.expires_at <= now:
            raise ApiError("this invite has expired", code="invite_expired", status=410)
        if not await repo.claim(invite.id, now):
            raise ApiError("this invite was already used", code="invite_used", status=410)
        pair = await self._open_session(s, user_id=invite.invitee_user_id, invite_id=invite.id, client_addr=client_addr)
        return invite, pair

    async def revoke_invite_by_id(self, s: AsyncSession, invite_id: int) -> int | None:
        """Revoke an invite by id (a moderator removed its holder); its login session ends with it."""
        invite = await InviteRepository(s).get(invite_id)
        if invite is None:
            return None
        await self.revoke_invite(s, invite)
        return invite.id

    async def revoke_invite(self, s: AsyncSession, invite: Invite) -> None:
        self.session_cache.forget_invite(invite.id)
        if invite.revoked_at is None:
            invite.revoked_at = self.clock.now()
            await s.flush()
