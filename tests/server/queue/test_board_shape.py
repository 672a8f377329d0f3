"""The board a supervisor reads (REST) and the board pushed to the department (``queue.changed``) agree in shape.

The dashboard renders a window's current ticket from ``windows[].current``
whichever of the two it last got; the REST board once carried it only as
``current_ticket``, so the number showed only between a push and a reload.
"""

from __future__ import annotations

from typing import Any

from server.app import Services
from tests.server.queue.conftest import RecordingNotifier, ok, seed_tickets, window_id


async def test_rest_board_and_push_carry_the_current_ticket_alike(
    as_user: Any, services: Services, notices: RecordingNotifier
) -> None:
    supervisor, clerk = await as_user("supervisor"), await as_user("clerk")
    await seed_tickets(services, 2)
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    dept = called["department_id"]
    await services.queue.flush_boards()
    pushed = notices.of("queue.changed", f"department:{dept}")[-1]
    board = await ok(await supervisor.get(f"/api/v1/departments/{dept}/queue"))

    rest_windows = {w["id"]: w for w in board["windows"]}
    push_windows = {w["id"]: w for w in pushed["windows"]}
    assert set(rest_windows) == set(push_windows) and win in rest_windows
    for wid, pw in push_windows.items():
        rw = rest_windows[wid]
        missing = set(pw) - set(rw)
        assert not missing, f"the REST board's window lacks {missing}"
        assert {k: rw[k] for k in pw} == pw
    assert rest_windows[win]["current"] == called["number"] == push_windows[win]["current"]
    assert rest_windows[win]["current_ticket"]["id"] == called["id"]
    # A window's own read says the same.
    assert (await ok(await clerk.get(f"/api/v1/windows/{win}")))["current"] == called["number"]
    for key in ("department_id", "window_id", "colour", "waiting", "longest_wait", "open_windows"):
        assert board[key] == pushed[key], key
