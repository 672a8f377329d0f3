"""Fixtures for the object store tests.

Reusable S3 fixtures (meant to move to a top-level conftest later):

* ``moto_endpoint`` (session): URL of a moto S3 server on 127.0.0.1, started
  once.  With ``CI=true`` a failure to start fails the run; elsewhere it skips
  the S3 tests.
* ``s3_settings`` (function): :class:`S3Settings` for a fresh, empty bucket on
  that server (5 MiB parts, the S3 minimum, so multipart is cheap to test).
* ``s3_client``: a plain boto3 client for inspecting the bucket.

The contract fixtures: ``store`` runs each test against both backends;
``raw_state`` reports what is physically stored (including temp files and
pending multipart uploads) so tests can assert that nothing leaked.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.config import Config

from server.objectstore import FilesystemObjectStore, ObjectStore, S3ObjectStore, UrlSigner, object_routes
from server.settings import S3Settings

SECRET = "test-secret-0123456789abcdef"
PART_SIZE = 5 * 1024 * 1024
_MOTO_START_TIMEOUT = 30.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (free port) with fake credentials."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        try:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            # start() waits forever if the server thread dies; bound the wait.
            starter = threading.Thread(target=server.start, daemon=True)
            starter.start()
            starter.join(_MOTO_START_TIMEOUT)
            if starter.is_alive():
                raise RuntimeError(f"moto server did not start within {_MOTO_START_TIMEOUT}s")
            host, port = server.get_host_and_port()
        except Exception as exc:
            if _in_ci():
                pytest.fail(f"could not start the moto S3 server (CI must not skip): {exc!r}")
            pytest.skip(f"moto S3 server unavailable: {exc!r}")
        assert host == "127.0.0.1"
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def _client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Iterator[Any]:
    client = _client(moto_endpoint)
    yield client
    client.close()


@pytest.fixture
def s3_settings(moto_endpoint: str, s3_client: Any) -> S3Settings:
    """Settings for a new, empty bucket (unique name) on the moto server."""
    bucket = f"cw-test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=bucket)
    return S3Settings(
        endpoint_url=moto_endpoint,
        bucket=bucket,
        access_key_id="testing",
        secret_access_key="testing",
        region="us-east-1",
        part_size=PART_SIZE,
    )


class FakeClock:
    """A settable Unix-time clock for :class:`UrlSigner`."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url_clock() -> FakeClock:
    """The clock of the filesystem store's URL signer (named so as not to
    shadow the application ``clock`` fixture)."""
    return FakeClock()


@pytest.fixture
def signer(url_clock: FakeClock) -> UrlSigner:
    return UrlSigner(SECRET, clock=url_clock)


@pytest.fixture
async def fs_store(tmp_path: Path, signer: UrlSigner) -> AsyncIterator[FilesystemObjectStore]:
    store = FilesystemObjectStore(tmp_path / "store", signer)
    yield store
    await store.close()


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, signer: UrlSigner) -> AsyncIterator[ObjectStore]:
    """The same contract scenarios run against every backend."""
    created: ObjectStore
    if request.param == "filesystem":
        created = FilesystemObjectStore(tmp_path / "store", signer)
    else:
        created = S3ObjectStore(request.getfixturevalue("s3_settings"))
    yield created
    await created.close()


@dataclass
class RawState:
    """What is physically in the backend."""

    #: Stored object keys / files, including uncommitted ones.
    objects: list[str]
    #: Temp files (filesystem) or keys of pending multipart uploads (S3).
    pending: list[str]


@pytest.fixture
def raw_state(request: pytest.FixtureRequest) -> Callable[[ObjectStore], Awaitable[RawState]]:
    async def inspect(store: ObjectStore) -> RawState:
        if isinstance(store, FilesystemObjectStore):
            objects = sorted(
                str(path.relative_to(store.root / "objects"))
                for path in (store.root / "objects").rglob("*")
                if not path.is_dir()
            )
            pending = sorted(path.name for path in (store.root / ".tmp").iterdir())
            return RawState(objects, pending)
        assert isinstance(store, S3ObjectStore)
        client = request.getfixturevalue("s3_client")
        listed = client.list_objects_v2(Bucket=store.bucket)
        uploads = client.list_multipart_uploads(Bucket=store.bucket)
        return RawState(
            sorted(item["Key"] for item in listed.get("Contents", [])),
            sorted(item["Key"] for item in uploads.get("Uploads", [])),
        )

    return inspect


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


Fetch = Callable[..., Awaitable[Fetched]]


@pytest.fixture
async def fetch(store: ObjectStore) -> AsyncIterator[Fetch]:
    """GET a signed URL: through ``object_routes`` in a test server for the
    filesystem store, straight from moto for S3."""
    if isinstance(store, FilesystemObjectStore):
        app = web.Application()
        app.add_routes(object_routes(store, store.signer))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()

        async def get_fs(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Fetched:
            async with client.request(method, url, headers=headers) as response:
                return Fetched(response.status, dict(response.headers), await response.read())

        yield get_fs
        await client.close()
    else:
        async with aiohttp.ClientSession() as session:

            async def get_s3(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Fetched:
                assert url.startswith("http://127.0.0.1:")
                async with session.request(method, url, headers=headers) as response:
                    return Fetched(response.status, dict(response.headers), await response.read())

            yield get_s3
