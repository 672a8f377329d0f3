"""The recorded-session flow of ``tests/server/test_session_recording.py`` with the S3 store (moto on 127.0.0.1):
segments uploaded and verified in the bucket, the post-session outputs stored there and played from presigned URLs."""

from __future__ import annotations

from typing import Any

import pytest

from server.settings import ObjectStoreSettings, RecordingSettings, S3Settings, Settings
from tests.server.test_session_recording import recorded_session_flow


@pytest.fixture
def settings(settings: Settings, s3_settings: S3Settings) -> Settings:
    return settings.model_copy(
        update={
            "object_store": ObjectStoreSettings(kind="s3", s3=s3_settings),
            "recording": RecordingSettings(segment_seconds=1.0, job_interval=0.2),
        }
    )


@pytest.mark.s3
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_recorded_session_on_s3(as_user: Any, client: Any, settings: Settings) -> None:
    await recorded_session_flow(as_user, client, settings)
