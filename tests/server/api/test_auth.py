"""Login, refresh rotation, logout and the invite flow, end to end over HTTP."""

from __future__ import annotations

from typing import Any

from tests.conftest import DEMO_PASSWORD, Session, login
from tests.server.api.conftest import open_case


async def test_login_me_refresh_logout(client: Any, demo: dict[str, str]) -> None:
    staff = await login(client, "staff")
    me = await (await staff.get("/api/v1/me")).json()
    assert me["username"] == "staff"
    assert me["role"] == "community_staff"
    assert me["unit_code"] == "P01"

    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": staff.refresh})
    assert resp.status == 200
    rotated = await resp.json()
    assert rotated["refresh_token"] != staff.refresh
    fresh = Session(client, rotated["access_token"], rotated["refresh_token"])
    assert (await fresh.get("/api/v1/me")).status == 200
    # (The old refresh token works once only; presenting it again ends the session: see the rotation test below.)
    assert (await fresh.post("/api/v1/auth/logout")).status == 204
    # Logout ends the session at once: the access token and the refresh token both stop working.
    resp = await fresh.get("/api/v1/me")
    assert resp.status == 401
    assert (await resp.json())["code"] == "session_revoked"
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": fresh.refresh})
    assert resp.status == 401


async def test_login_is_case_insensitive_on_username(client: Any, demo: dict[str, str]) -> None:
    resp = await client.post("/api/v1/auth/login", json={"username": "STAFF", "password": DEMO_PASSWORD})
    assert resp.status == 200


async def test_rate_limit_window_passes(client: Any, demo: dict[str, str], clock: Any) -> None:
    for _ in range(5):
        resp = await client.post("/api/v1/auth/login", json={"username": "clerk", "password": "wrong"})
        assert resp.status == 401
    resp = await client.post("/api/v1/auth/login", json={"username": "clerk", "password": DEMO_PASSWORD})
    assert resp.status == 429
    body = await resp.json()
    assert body["code"] == "login_rate_limited"
    assert body["details"]["retry_after"] > 0
    clock.advance(301)
    resp = await client.post("/api/v1/auth/login", json={"username": "clerk", "password": DEMO_PASSWORD})
    assert resp.status == 200


async def test_invite_gives_read_access_to_one_case_only(as_user: Any, client: Any) -> None:
    staff = await as_user("staff")
    clerk = await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    other = (await open_case(staff, applicant_name="王五"))["id"]

    resp = await clerk.post(f"/api/v1/cases/{cid}/invites", json={"role": "expert", "display_name": "陈工"})
    assert resp.status == 201, await resp.text()
    invite = await resp.json()
    token = invite["token"]
    listed = await (await clerk.get(f"/api/v1/cases/{cid}/invites")).json()
    assert listed["items"][0]["token"] is None  # shown once only

    resp = await client.post(f"/api/v1/cases/{cid}/invites/redeem", json={"token": token})
    assert resp.status == 200, await resp.text()
    guest_tokens = await resp.json()
    assert guest_tokens["role"] == "expert"
    guest = Session(client, guest_tokens["access_token"], guest_tokens["refresh_token"])
    assert (await guest.get(f"/api/v1/cases/{cid}")).status == 200
    assert (await guest.get(f"/api/v1/cases/{other}")).status == 404
    assert [c["id"] for c in (await (await guest.get("/api/v1/cases")).json())["items"]] == [cid]
    assert (await guest.patch(f"/api/v1/cases/{cid}", json={"applicant_name": "x"})).status == 403

    # Revoking the invite ends the guest's session too.
    resp = await clerk.delete(f"/api/v1/cases/{cid}/invites/{invite['id']}")
    assert resp.status == 204
    resp = await guest.get(f"/api/v1/cases/{cid}")
    assert resp.status == 401
    # BUG: the revoked invite's refresh token still refreshed (the new access token was refused only later).
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": guest.refresh})
    assert resp.status == 401 and (await resp.json())["code"] == "refresh_invalid"

    audit = await (await clerk.get(f"/api/v1/cases/{cid}/audit")).json()
    assert [e["action"] for e in audit["entries"]][-3:] == ["invite.created", "invite.redeemed", "invite.revoked"]
    assert audit["verified"]


async def test_a_rotated_refresh_token_used_again_ends_the_whole_session(client: Any, demo: dict[str, str]) -> None:
    """BUG: reusing a rotated refresh token was refused, but the rest of its family went on working.

    RFC 6819 section 5.2.2.3: the server cannot tell the thief from the owner, so it ends the session for both.
    """
    staff = await login(client, "staff")
    first = staff.refresh
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert resp.status == 200
    rotated = await resp.json()
    current = Session(client, rotated["access_token"], rotated["refresh_token"])
    assert (await current.get("/api/v1/me")).status == 200

    # A forged token in the same shape (a wrong MAC) is refused and ends nothing.
    session_id, generation, mac = rotated["refresh_token"].split(".")
    forged = f"{session_id}.{int(generation) + 5}.{mac}"
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": forged})
    assert resp.status == 401 and (await resp.json())["code"] == "refresh_invalid"
    assert (await current.get("/api/v1/me")).status == 200

    # The rotated-away token comes back: refused, and the session is over for its current holder too.
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert resp.status == 401 and (await resp.json())["code"] == "refresh_invalid"
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": current.refresh})
    assert resp.status == 401 and (await resp.json())["code"] == "refresh_invalid"
    resp = await current.get("/api/v1/me")
    assert resp.status == 401 and (await resp.json())["code"] == "session_revoked"
    # Another login session of the same user is untouched.
    other = await login(client, "staff")
    assert (await other.get("/api/v1/me")).status == 200


async def test_invited_participants_see_what_their_case_needs_only(as_user: Any, client: Any) -> None:
    """BUG: a guest read the audit trail (with staff client addresses), the applicant's phone, the org tree and
    the window list."""
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    resp = await clerk.post(f"/api/v1/cases/{cid}/invites", json={"role": "guest", "display_name": "家属"})
    token = (await resp.json())["token"]
    tokens = await (await client.post(f"/api/v1/cases/{cid}/invites/redeem", json={"token": token})).json()
    guest = Session(client, tokens["access_token"], tokens["refresh_token"])

    detail = await (await guest.get(f"/api/v1/cases/{cid}")).json()
    assert detail["applicant_phone"] == "138****8000" and detail["applicant_id_number"] is None
    assert (await (await staff.get(f"/api/v1/cases/{cid}")).json())["applicant_phone"] == "13800138000"
    for path in (f"/api/v1/cases/{cid}/audit", "/api/v1/org", "/api/v1/tickets", "/api/v1/alerts"):
        resp = await guest.get(path)
        assert resp.status == 403 and (await resp.json())["code"] == "forbidden", path
    assert (await staff.get(f"/api/v1/cases/{cid}/audit")).status == 200
