"""Where a case is handled and by whom, as a client without admin rights can find out.

``GET /matters/{code}/centres`` lists the centres that can take a matter
from the caller's unit (the ``centre_code`` choices of ``POST /cases``,
nearest first, the default marked); the point then reads which department,
centre, window and clerk its ticket is at from the ticket and ``GET /org``.
"""

from __future__ import annotations

from typing import Any

from tests.server.api.conftest import open_case, png_bytes, upload


async def test_centres_for_a_matter_are_the_choices_case_creation_accepts(as_user: Any) -> None:
    staff = await as_user("staff")  # 梁祝社区 (P01) under 高桥镇 (T01) under the district centre (D01)
    resp = await staff.get("/api/v1/matters/MZ-001/centres")
    assert resp.status == 200, await resp.text()
    centres = (await resp.json())["items"]
    assert [(c["code"], c["default"]) for c in centres] == [("T01", True), ("D01", False)]
    assert centres[0]["department_name_zh"] == "高桥镇民政办" and centres[1]["tier"] == 1
    for c in centres:
        case = await open_case(staff, centre_code=c["code"])
        assert case["department_id"] == c["department_id"]
    default = await open_case(staff)
    assert default["department_id"] == centres[0]["department_id"]

    refused = await staff.post(
        "/api/v1/cases",
        json={
            "matter_code": "MZ-001",
            "applicant_name": "张秀英",
            "applicant_id_number": "11010519491231002X",
            "applicant_phone": "13800138000",
            "centre_code": "T02",
        },
    )
    assert refused.status == 422 and (await refused.json())["code"] == "invalid_centre"
    resp = await staff.get("/api/v1/matters/XX-999/centres")
    assert resp.status == 404 and (await resp.json())["code"] == "matter_not_found"
    resp = await staff.get("/api/v1/matters/not-a-code/centres")
    assert resp.status == 404 and (await resp.json())["code"] == "matter_not_found"


async def test_the_point_can_tell_where_its_ticket_is_and_which_clerk_acts(as_user: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk")
    case = await open_case(staff, centre_code="D01")
    for item in case["checklist"]:
        resp = await upload(staff, case["id"], item["code"], png_bytes())
        assert resp.status == 201, await resp.text()
    assert (await staff.post(f"/api/v1/cases/{case['id']}/transitions", json={"to": "submitted"})).status == 200
    ticket = await (await staff.post(f"/api/v1/cases/{case['id']}/tickets")).json()

    org = await (await staff.get("/api/v1/org")).json()
    department = next(d for d in org["departments"] if d["id"] == ticket["department_id"])
    centre = next(u for u in org["units"] if u["id"] == department["unit_id"])
    assert (department["name_zh"], centre["code"]) == ("区民政局", "D01")

    win = next(w for w in org["windows"] if w["code"] == "D01-MZ-1")
    assert (await clerk.post(f"/api/v1/windows/{win['id']}/sign-in")).status == 200
    called = await (await clerk.post(f"/api/v1/windows/{win['id']}/call-next")).json()
    assert called["id"] == ticket["id"]
    mine = await (await staff.get(f"/api/v1/tickets/{ticket['id']}")).json()
    org = await (await staff.get("/api/v1/org")).json()
    window = next(w for w in org["windows"] if w["id"] == mine["window_id"])
    me_clerk = await (await clerk.get("/api/v1/me")).json()
    assert mine["clerk_user_id"] == window["clerk_user_id"] == me_clerk["user_id"]
    assert window["clerk_name"] == me_clerk["display_name"]
