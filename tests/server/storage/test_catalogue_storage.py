"""Catalogue and demo data through the repositories, on both engines."""

from __future__ import annotations

from server import demo
from server.clock import FakeClock
from server.services import catalogue
from server.storage.database import Database
from server.storage.matters import MatterRepository
from server.storage.orgs import OrgRepository


async def test_demo_load_builds_three_tiers(db: Database, clock: FakeClock) -> None:
    async with db.transaction() as s:
        users = await demo.load(s, clock, password="pw-0123456789")
    assert {u.role for u in users} >= {
        "admin",
        "supervisor",
        "clerk",
        "community_staff",
        "expert",
        "inspector",
    }
    async with db.transaction() as s:
        orgs = OrgRepository(s)
        units = await orgs.units()
        assert [u.tier for u in units].count(1) == 1
        assert [u.tier for u in units].count(2) == 2
        assert [u.tier for u in units].count(3) == 3
        point = await orgs.unit_by_code("P01")
        assert point is not None
        chain = await orgs.ancestors(point)
        assert [u.tier for u in chain] == [2, 1]
        assert point.path.startswith(chain[1].path) and point.path.startswith(chain[0].path)
        matters, total = await MatterRepository(s).search(query=None, department_code=None, limit=100, offset=0)
        assert total >= 20
        assert any(m.needs_inspection for m in matters)
        assert await demo.is_loaded(s)


async def test_matter_search_matches_chinese_and_english(db: Database, clock: FakeClock) -> None:
    async with db.transaction() as s:
        await demo.load(s, clock, password="pw-0123456789")
    async with db.transaction() as s:
        repo = MatterRepository(s)
        zh, _ = await repo.search(query="高龄", department_code=None, limit=10, offset=0)
        en, _ = await repo.search(query="old-age", department_code=None, limit=10, offset=0)
        assert [m.code for m in zh] == [m.code for m in en] == ["MZ-001"]


async def test_catalogue_roundtrip_yaml_and_csv_keeps_item_ids(db: Database, clock: FakeClock) -> None:
    async with db.transaction() as s:
        await demo.load(s, clock, password="pw-0123456789")
    async with db.transaction() as s:
        before = await catalogue.export_spec(s)
        repo = MatterRepository(s)
        m = await repo.by_code("MZ-001")
        assert m is not None
        ids_before = {i.code: i.id for i in await repo.checklist(m.id)}
    yaml_text = catalogue.dump_yaml(before)
    csv_text = catalogue.dump_csv(before)
    assert catalogue.parse_yaml(yaml_text) == before
    from_csv = catalogue.parse_csv(csv_text)
    assert [m.code for m in from_csv.matters] == [m.code for m in before.matters]
    assert [m.checklist for m in from_csv.matters] == [m.checklist for m in before.matters]
    async with db.transaction() as s:
        counts = await catalogue.import_spec(s, catalogue.parse_yaml(yaml_text))
    assert counts == {"created": 0, "updated": len(before.matters)}
    async with db.transaction() as s:
        repo = MatterRepository(s)
        m = await repo.by_code("MZ-001")
        assert m is not None
        assert {i.code: i.id for i in await repo.checklist(m.id)} == ids_before
        assert await catalogue.export_spec(s) == before
