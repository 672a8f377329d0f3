"""What docs/protocol.md promises a client written from it alone, checked through the whole app.

Offers name the participant (join) they are for, also across a rejoin; the
join ack's ``participants`` includes the joiner; ``participant.left`` and
``session.ended`` carry the documented reasons.  Real media (aiortc callers),
SQLite only (the database plays no part).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.media_harness import Caller, until
from tests.server.api.conftest import open_call

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PROTOCOL_MD = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")


def _offers(c: Caller) -> list[dict[str, Any]]:
    return [d for e, d in c.events if e == "media.offer"]


@SQLITE_ONLY
async def test_offers_name_their_participant_and_leave_reasons_are_documented(as_user: Any, client: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    _, session_id = await open_call(staff)
    base = f"http://127.0.0.1:{client.server.port}"
    a, b = Caller(base, staff.token, tag=1), Caller(base, clerk.token, tag=2)
    try:
        await a.connect()
        await b.connect()
        ack_a = await a.join(session_id)
        assert ack_a["offer"]["participant_id"] == ack_a["participant_id"]
        # The joiner is in its own ack's participant list (and it alone, first in the session).
        assert [p["participant_id"] for p in ack_a["participants"]] == [ack_a["participant_id"]]
        ack_b = await b.join(session_id)
        assert ack_b["offer"]["participant_id"] == ack_b["participant_id"]
        assert {p["participant_id"] for p in ack_b["participants"]} == {a.participant_id, b.participant_id}
        # Later offers (a renegotiation for the other's tracks) name their participant too.
        await until(lambda: any(o["participant_id"] == a.participant_id for o in _offers(a)), 10, "offer for a")
        assert all(o["participant_id"] == a.participant_id for o in _offers(a))

        # A rejoin is a new participant; every offer after it names the new id, the others see "replaced".
        first = b.participant_id
        before = len(_offers(b))
        ack = await b.join(session_id)
        assert ack["participant_id"] != first and ack["offer"]["participant_id"] == ack["participant_id"]
        await until(lambda: any(e == "participant.left" for e, _ in a.events), 5, "participant.left")
        left = [d for e, d in a.events if e == "participant.left"]
        assert left == [{"participant_id": first, "reason": "replaced"}]
        assert all(o["participant_id"] == b.participant_id for o in _offers(b)[before:])
        assert (await b.sio.call("session.leave", {}, timeout=5))["ok"]
        await until(lambda: len([e for e, _ in a.events if e == "participant.left"]) == 2, 5, "left")
        assert [d for e, d in a.events if e == "participant.left"][-1] == {
            "participant_id": b.participant_id,
            "reason": "left",
        }
        assert (await staff.post(f"/api/v1/sessions/{session_id}/end")).status == 200
        await until(lambda: any(e == "session.ended" for e, _ in a.events), 5, "session.ended")
        ended = next(d for e, d in a.events if e == "session.ended")
        assert ended == {"session_id": session_id, "reason": "ended_by_host"}
        # An answer to the offer that dropped b's tracks may cross the end of the session: refused, rightly.
        for c in (a, b):
            assert [e for e in c.unexpected_errors() if e.get("error", {}).get("code") != "session_ended"] == []
    finally:
        await a.close()
        await b.close()


def test_every_reason_the_server_sends_is_listed_in_protocol_md() -> None:
    root = Path(__file__).resolve().parents[3]
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (root / "signalling").glob("*.py"))
    sources += "\n".join(p.read_text(encoding="utf-8") for p in (root / "server").rglob("*.py"))
    left = set(re.findall(r'_remove\([^)]*reason="([a-z_]+)"', sources))
    ended = set(re.findall(r'_end_local\([^)]*"([a-z_]+)"\)', sources))
    ended |= set(re.findall(r'end_session\([^)]*"([a-z_]+)"\)', sources))
    assert {"left", "replaced", "removed"} <= left and {"empty", "ended_by_host"} <= ended
    section_left = PROTOCOL_MD.split("**`participant.left`**", 1)[1].split("\n- ", 1)[0]
    section_ended = PROTOCOL_MD.split("**`session.ended`**", 1)[1].split("\n- ", 1)[0]
    for reason in left:
        assert f"`{reason}`" in section_left, f"participant.left reason {reason!r} is not in docs/protocol.md"
    for reason in ended:
        assert f"`{reason}`" in section_ended, f"session.ended reason {reason!r} is not in docs/protocol.md"
