"""Property-based fuzzing of the served OpenAPI document with schemathesis.

The real server runs on a loopback port (aiohttp's TestServer) with the demo district loaded on SQLite;
schemathesis reads ``/api/v1/openapi.json`` from it and, for every declared operation, sends a bounded,
derandomised set of generated requests (valid ones, and invalid ones that break the declared schema), then
schemathesis' deterministic coverage cases (boundary values, each constraint broken in turn, missing parts,
unexpected methods), as an admin and as community staff.  Every response must

* never be a 5xx (``not_a_server_error``);
* carry a status code the operation declares (``status_code_conformance``);
* carry a declared content type (``content_type_conformance``);
* match the declared body schema (``response_schema_conformance``: the model for 2xx, the
  ``{code, message, details}`` error body for 4xx);
* be a refusal when the operation declares the bearer scheme and the request had no token (``ignored_auth``
  re-sends it without), or when the request broke the declared schema (``negative_data_rejection``).

Nothing is skipped: logout is fuzzed with tokens of its own (it would end the fuzzing session), and destructive
admin operations run on this test's throwaway database.

Schemathesis is synchronous (``requests``); it runs in a worker thread while the event loop serves it.
"""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from PIL import Image
from schemathesis import BaseSchema, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Session, login
from tests.server.api.conftest import form, open_case, png_bytes, upload

#: Examples per operation, per generation mode, per role: small and fixed so CI is repeatable and fast.
#: ``CW_FUZZ_EXAMPLES=50`` runs a deeper, slower pass locally.
MAX_EXAMPLES = int(os.environ.get("CW_FUZZ_EXAMPLES", "6"))
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # Beyond the responses: an operation that declares the bearer scheme refuses a request without a token (it
    # re-sends the request without one), and input that breaks the declared schema is refused with a 4xx.
    ignored_auth,
    negative_data_rejection,
]
ROLES = ("admin", "staff")
#: Logout tokens for its coverage cases (one per case; running out fails the test rather than logging the fuzzing
#: session out).
SPARE_FOR_COVERAGE = 40
#: At least this many operations must see a 2xx per role (today 58 of 88 for admin, 45 for staff; a floor, so the
#: fuzzing cannot silently degrade into 401s or 404s for everything).
MIN_SUCCEEDED = {"admin": 45, "staff": 35}


@pytest.fixture
def db_url(sqlite_template: Any, tmp_path: Any) -> str:
    """SQLite only: the fuzzer's findings do not depend on the engine, and CI time is bounded."""
    import shutil

    path = tmp_path / "fuzz.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


def has_input(operation: schemathesis.APIOperation) -> bool:
    """Whether there is anything to make invalid (negative data for an operation without input is impossible)."""
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


def fuzz_operation(
    operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str, token: str, spare: list[str]
) -> tuple[str | None, list[int]]:
    """One operation in one generation mode: the failure report (or None), and the statuses seen."""
    statuses: list[int] = []
    logout = operation.path.endswith("/auth/logout")

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        headers = {"Authorization": f"Bearer {spare.pop() if logout else token}"}
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # collected, and reported together
        text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else repr(exc)
        return f"{operation.label} [{mode.value}]: {text[:1500]}", statuses
    return None, statuses


def cover_operation(
    schema: BaseSchema, operation: schemathesis.APIOperation, base_url: str, token: str, spare: list[str]
) -> tuple[str | None, list[int]]:
    """Schemathesis' coverage cases for one operation: deterministic boundary and schema-breaking values."""
    statuses: list[int] = []
    logout = operation.path.endswith("/auth/logout")
    config = schema.config.generation_for(operation=operation, phase="coverage")
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    for case in schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config):
        headers = {"Authorization": f"Bearer {spare.pop() if logout else token}"}
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # collected, and reported together
            text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else repr(exc)
            return f"{operation.label} [coverage]: {text[:1500]}", statuses
    return None, statuses


def fuzz(raw: dict[str, Any], base_url: str, token: str, spare: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """Every operation, positive and negative data; returns one report per failing operation, and the statuses seen.

    ``spare`` holds further tokens of the same user for logout, which would otherwise end the fuzzing session.
    """
    schema = schemathesis.openapi.from_dict(raw)
    failures: list[str] = []
    seen: dict[str, list[int]] = {}
    # DELETEs last, so that the other operations still find the seeded objects.
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: op.method.upper() == "DELETE")
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not has_input(operation):
                continue
            failure, statuses = fuzz_operation(operation, mode, base_url, token, spare)
            seen.setdefault(operation.label, []).extend(statuses)
            if failure is not None:
                failures.append(failure)
        failure, statuses = cover_operation(schema, operation, base_url, token, spare)
        seen.setdefault(operation.label, []).extend(statuses)
        if failure is not None:
            failures.append(failure)
    return failures, seen


async def seed(client: TestClient, staff: Session, clerk: Session) -> None:
    """Real objects behind the small ids the generator favours.

    Case 1 with a material, a session and a ticket; case 2 (a matter with a site inspection) with an inspection
    task, which the inspector joins by invite and adds a location and an evidence photo to.
    """
    case = await open_case(staff)
    resp = await upload(staff, case["id"], "id_card", png_bytes())
    assert resp.status == 201, await resp.text()
    resp = await staff.post(f"/api/v1/cases/{case['id']}/sessions", json={})
    assert resp.status == 201, await resp.text()
    resp = await staff.post(f"/api/v1/cases/{case['id']}/tickets")
    assert resp.status == 201, await resp.text()

    site = await open_case(staff, matter_code="SJ-004")
    resp = await clerk.post(f"/api/v1/cases/{site['id']}/inspections", json={})
    assert resp.status == 201, await resp.text()
    task = await resp.json()
    resp = await clerk.post(
        f"/api/v1/cases/{site['id']}/invites",
        json={"role": "inspector", "display_name": "吴磊", "session_id": task["session_id"]},
    )
    assert resp.status == 201, await resp.text()
    token = (await resp.json())["token"]
    resp = await client.post(f"/api/v1/sessions/{task['session_id']}/invites/redeem", json={"token": token})
    assert resp.status == 200, await resp.text()
    inspector = Session(client, (await resp.json())["access_token"], "")
    resp = await inspector.post(
        f"/api/v1/inspections/{task['id']}/locations", json={"lat": 29.87, "lon": 121.54, "accuracy": 8.5}
    )
    assert resp.status == 201, await resp.text()
    stamps = "client_key=fuzz-seed-0001&client_seq=1&captured_at=2026-12-01T09:30:00%2B08:00&device=Pixel"
    resp = await inspector.post(f"/api/v1/inspections/{task['id']}/evidence?{stamps}", data=form(jpeg_bytes()))
    assert resp.status == 201, await resp.text()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("role", ROLES)
async def test_fuzz_openapi(client: TestClient, as_user: Any, role: str) -> None:
    session: Session = await as_user(role)
    await seed(client, await as_user("staff"), await as_user("clerk2"))
    raw = await (await client.get("/api/v1/openapi.json")).json()
    base_url = str(client.make_url("")).rstrip("/")
    spare = [(await login(client, role)).token for _ in range(2 * MAX_EXAMPLES + SPARE_FOR_COVERAGE)]
    failures, seen = await asyncio.to_thread(fuzz, raw, base_url, session.token, spare)
    assert failures == [], "\n\n".join(failures)
    # Not vacuous: the fuzzing session stayed logged in, and many operations were answered with success.
    assert (await session.get("/api/v1/me")).status == 200
    succeeded = sorted(op for op, statuses in seen.items() if any(200 <= s < 300 for s in statuses))
    assert len(seen) == len([m for ops in raw["paths"].values() for m in ops]), sorted(seen)
    assert len(succeeded) >= MIN_SUCCEEDED[role], succeeded
