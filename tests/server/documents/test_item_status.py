"""The checklist item's status from its documents: the newest one decides (a re-upload supersedes a return)."""

from __future__ import annotations

from datetime import UTC, datetime

from server.services.documents import item_status, satisfied
from server.storage.models import Document


def _doc(id_: int, state: str) -> Document:
    return Document(
        id=id_,
        case_id=1,
        checklist_item_id=1,
        filename="a.png",
        content_type="image/png",
        size=1,
        sha256="0" * 64,
        object_key=f"k{id_}",
        uploaded_by=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        review_state=state,
    )


def test_item_status() -> None:
    assert item_status([]) == "missing"
    assert item_status([_doc(1, "pending")]) == "pending"
    assert item_status([_doc(2, "pending"), _doc(1, "returned")]) == "pending"  # re-uploaded after a return
    assert item_status([_doc(1, "accepted"), _doc(2, "returned")]) == "returned"  # the newest was returned
    assert item_status([_doc(3, "accepted"), _doc(2, "returned")]) == "accepted"
    assert [satisfied(s) for s in ("missing", "pending", "accepted", "returned")] == [False, True, True, False]
