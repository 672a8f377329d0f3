"""Signed evidence manifests: what makes a tampered photo or tampered metadata detectable.

Each evidence photo gets a manifest: a canonical JSON document (sorted keys,
no insignificant whitespace, UTF-8) of everything the server asserts about
it — the case, task and item, the photo's SHA-256 and size, its GPS fix and
accuracy, the phone's capture time and device, the server's receive time,
the uploader.  The server signs the manifest bytes with Ed25519 (RFC 8032).
Verification recomputes the photo's hash from the stored object, rebuilds
the manifest from the database row and checks both against the signed
manifest and its signature; any edit of the object, of the row or of the
stored manifest breaks one of the three.  The public key is published
(``GET /api/v1/evidence/public-key``), so a manifest and photo exported
from the case file can be checked without the server.

The signing key is derived from the server's secret key (HKDF-SHA256 with
a fixed label), so every process of a deployment signs with the same key
and no new secret has to be distributed; ``key_id`` names it (the first 16
hex digits of the SHA-256 of the raw public key).  Rotating the secret
rotates the key: manifests name the key they were signed with.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.storage.models import InspectionEvidence

MANIFEST_VERSION = 1
_LABEL = b"cloudwindow evidence manifest signing key v1"


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


def manifest_fields(row: InspectionEvidence) -> dict[str, Any]:
    """The signed facts about an evidence row (what the manifest says, rebuilt from the database)."""
    return {
        "v": MANIFEST_VERSION,
        "evidence_id": row.id,
        "task_id": row.task_id,
        "case_id": row.case_id,
        "item_code": row.item_code,
        "client_key": row.client_key,
        "client_seq": row.client_seq,
        "sha256": row.sha256,
        "size": row.size,
        "content_type": row.content_type,
        "lat": row.lat,
        "lon": row.lon,
        "accuracy": row.accuracy,
        "captured_at": _iso(row.captured_at),
        "received_at": _iso(row.received_at),
        "device": row.device,
        "uploaded_by_user_id": row.uploaded_by_user_id,
        "uploaded_by_name": row.uploaded_by_name,
        # Present only when known, so manifests signed before it existed still match their rows.
        **(
            {"invited_by_user_id": row.invited_by_user_id, "invited_by_name": row.invited_by_name}
            if row.invited_by_user_id is not None
            else {}
        ),
    }


def canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Verification:
    valid: bool
    signature_valid: bool
    manifest_matches_record: bool
    content_matches: bool
    problems: list[str]


class EvidenceSigner:
    def __init__(self, secret: str) -> None:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(secret.encode())
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: Ed25519PublicKey = self._key.public_key()
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key_b64 = base64.b64encode(raw).decode()
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, row: InspectionEvidence) -> None:
        """Set the row's ``manifest``, ``signature`` and ``key_id`` (the row must have its id)."""
        row.manifest = canonical(manifest_fields(row))
        row.signature = base64.b64encode(self._key.sign(row.manifest.encode())).decode()
        row.key_id = self.key_id

    def verify(self, row: InspectionEvidence, content_sha256: str | None, content_size: int | None) -> Verification:
        """Check the signature, the row against the manifest, and the stored photo against both.

        ``content_sha256``/``content_size`` are computed from the object as
        stored now (``None``: the object is missing).
        """
        problems: list[str] = []
        signature_ok = False
        if row.key_id != self.key_id:
            problems.append(f"signed with key {row.key_id}, this server's key is {self.key_id}")
        else:
            try:
                self.public_key.verify(base64.b64decode(row.signature, validate=True), row.manifest.encode())
                signature_ok = True
            except (InvalidSignature, ValueError):
                problems.append("the manifest's signature does not verify")
        try:
            signed = json.loads(row.manifest)
        except ValueError:
            signed = None
        record = manifest_fields(row)
        matches = signed == record
        if not matches:
            if isinstance(signed, dict):
                changed = sorted(k for k in set(signed) | set(record) if signed.get(k) != record.get(k))
            else:
                changed = ["manifest"]
            problems.append(f"the record differs from the signed manifest: {', '.join(changed)}")
        content_ok = content_sha256 is not None and isinstance(signed, dict)
        if content_sha256 is None:
            problems.append("the photo is missing from the object store")
        elif isinstance(signed, dict) and (
            content_sha256 != signed.get("sha256") or content_size != signed.get("size")
        ):
            content_ok = False
            problems.append("the stored photo's SHA-256 or size differs from the signed manifest")
        return Verification(
            valid=signature_ok and matches and content_ok,
            signature_valid=signature_ok,
            manifest_matches_record=matches,
            content_matches=content_ok,
            problems=problems,
        )
