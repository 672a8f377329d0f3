"""Closed segments from the local spool to object storage, checksum-verified, retried, resumed after a restart.

The spool (see :mod:`recordings.recorder` for its layout) is the source of
truth: every manifest lists durable segments; the uploader puts each one to
the store under ``<prefix>/<path in the spool>`` with ``expected_sha256`` from
the manifest (the store refuses different bytes), then reads the object's
metadata back and compares size and SHA-256.  Only then does it record the
segment as uploaded, in ``uploaded.json`` beside the manifest (rewritten
atomically).  A failed upload is retried with exponential backoff; a
restarted process simply scans the spool again and carries on where the
record says.  When a track has ended and all its segments are uploaded,
its manifest is uploaded too (``manifest.json`` under the same prefix).

Nothing is deleted here: local files stay until the post-session job has
used them.  :meth:`SpoolUploader.check_space` reports a spool over its bound
or a disk short of free space to ``on_alert`` (and a gauge), never by
dropping data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .segments import MANIFEST, TrackManifest

__all__ = ["SegmentStore", "SpaceReport", "SpoolUploader", "StoredLike", "UploadStats"]

log = logging.getLogger(__name__)

UPLOADED = "uploaded.json"
CONTENT_TYPES = {".webm": "video/webm", ".mkv": "video/x-matroska", ".json": "application/json"}


class StoredLike(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...


class SegmentStore(Protocol):
    """What the uploader needs of an object store (the server's ``ObjectStore`` satisfies it)."""

    async def put(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str = ...,
        max_size: int | None = ...,
        expected_sha256: str | None = ...,
    ) -> StoredLike: ...

    async def stat(self, key: str) -> StoredLike: ...


@dataclass
class UploadStats:
    uploaded: int = 0
    bytes: int = 0
    failures: int = 0
    verified_mismatch: int = 0
    pending: int = 0


@dataclass(frozen=True)
class SpaceReport:
    spool_bytes: int
    free_bytes: int
    problems: list[str] = field(default_factory=list)


async def _chunks(path: Path, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, size):
            yield chunk


def _save_json(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SpoolUploader:
    """See the module docstring."""

    def __init__(
        self,
        spool: Path,
        store: SegmentStore,
        *,
        prefix: str = "recordings",
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        interval: float = 1.0,
        spool_max_bytes: int = 0,
        min_free_bytes: int = 0,
        on_alert: Callable[[SpaceReport], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.store = store
        self.prefix = prefix.strip("/")
        self.retry_base, self.retry_max, self.interval = retry_base, retry_max, interval
        self.spool_max_bytes, self.min_free_bytes = spool_max_bytes, min_free_bytes
        self.on_alert = on_alert
        self.monotonic = monotonic
        self.stats = UploadStats()
        self.space: SpaceReport | None = None
        self._backoff: dict[Path, tuple[float, float]] = {}  # segment -> (retry at, next delay)

    def key_for(self, path: Path) -> str:
        return f"{self.prefix}/{path.relative_to(self.spool).as_posix()}"

    def track_folders(self) -> list[Path]:
        if not self.spool.is_dir():
            return []
        return sorted(p.parent for p in self.spool.glob(f"**/{MANIFEST}"))

    @staticmethod
    def uploaded(folder: Path) -> set[str]:
        path = folder / UPLOADED
        if not path.is_file():
            return set()
        return set(json.loads(path.read_text(encoding="utf-8")))

    async def upload_pending(self) -> UploadStats:
        """One pass over the spool: every durable, not yet uploaded segment (and finished manifests)."""
        pending = 0
        for folder in self.track_folders():
            manifest = TrackManifest.load(folder)
            done = self.uploaded(folder)
            changed = False
            for seg in manifest.segments:
                if seg.file in done:
                    continue
                path = folder / seg.file
                if not await self._upload(path, seg.size, seg.sha256):
                    pending += 1
                    continue
                done.add(seg.file)
                changed = True
            if changed:
                _save_json(folder / UPLOADED, sorted(done))
            if manifest.ended and MANIFEST not in done and all(s.file in done for s in manifest.segments):
                data = (folder / MANIFEST).read_bytes()
                if await self._upload(folder / MANIFEST, len(data), hashlib.sha256(data).hexdigest()):
                    done.add(MANIFEST)
                    _save_json(folder / UPLOADED, sorted(done))
                else:
                    pending += 1
        self.stats.pending = pending
        self.check_space()
        return self.stats

    async def _upload(self, path: Path, size: int, sha256: str) -> bool:
        retry_at, delay = self._backoff.get(path, (0.0, self.retry_base))
        if self.monotonic() < retry_at:
            return False
        key = self.key_for(path)
        try:
            await self.store.put(
                key,
                _chunks(path),
                content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                max_size=size,
                expected_sha256=sha256,
            )
            stored = await self.store.stat(key)
            if stored.size != size or stored.sha256 != sha256:
                self.stats.verified_mismatch += 1
                raise RuntimeError(f"{key}: stored {stored.size} bytes {stored.sha256}, expected {size} {sha256}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.failures += 1
            self._backoff[path] = (self.monotonic() + delay, min(delay * 2, self.retry_max))
            log.warning("recording upload of %s failed (retry in %.1f s): %s", key, delay, exc)
            return False
        self._backoff.pop(path, None)
        self.stats.uploaded += 1
        self.stats.bytes += size
        return True

    def check_space(self) -> SpaceReport:
        spool_bytes = sum(p.stat().st_size for p in self.spool.rglob("*") if p.is_file()) if self.spool.is_dir() else 0
        where = self.spool
        while not where.exists() and where != where.parent:
            where = where.parent  # the spool is made on the first recording; its disk is its nearest ancestor's
        free = shutil.disk_usage(where).free
        problems = []
        if self.spool_max_bytes and spool_bytes > self.spool_max_bytes:
            problems.append(f"recording spool holds {spool_bytes} bytes, over its bound of {self.spool_max_bytes}")
        if self.min_free_bytes and free < self.min_free_bytes:
            problems.append(f"only {free} bytes free on the recording spool's disk (minimum {self.min_free_bytes})")
        report = SpaceReport(spool_bytes, free, problems)
        if problems and self.on_alert is not None and (self.space is None or not self.space.problems):
            self.on_alert(report)
        self.space = report
        return report

    async def run(self) -> None:
        """Upload forever (until cancelled), one pass every ``interval`` seconds."""
        while True:
            try:
                await self.upload_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording upload pass failed")
            await asyncio.sleep(self.interval)
