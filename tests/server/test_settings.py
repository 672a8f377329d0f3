"""Settings: validation messages name the bad key; every key is in docs/operations.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from server.app import create_app
from server.clock import FakeClock
from server.settings import ConfigError, Settings, load_settings
from signalling.sfu import udpsend

OPERATIONS = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_setting_is_documented() -> None:
    missing = [k for k in _keys(Settings) if f"`{k}`" not in OPERATIONS]
    assert missing == []


def test_env_and_toml_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "cw.toml"
    toml.write_text('port = 9000\n[object_store]\nkind = "s3"\n[object_store.s3]\nbucket = "from-toml"\n')
    monkeypatch.setenv("CLOUDWINDOW_OBJECT_STORE__S3__BUCKET", "from-env")
    s = load_settings(toml)
    assert s.port == 9000
    assert s.object_store.kind == "s3"
    assert s.object_store.s3.bucket == "from-env"


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("CLOUDWINDOW_PORT", "eighty", "port"),
        ("CLOUDWINDOW_OBJECT_STORE__KIND", "ftp", "object_store.kind"),
        ("CLOUDWINDOW_DATABASE_URL", "mysql://x", "database_url"),
        ("CLOUDWINDOW_AUTH__ACCESS_TOKEN_TTL", "1", "auth.access_token_ttl"),
        ("CLOUDWINDOW_OBJECT_STORE__S3__PART_SIZE", "1024", "object_store.s3.part_size"),
    ],
)
def test_bad_values_name_the_key(monkeypatch: pytest.MonkeyPatch, env: str, value: str, key: str) -> None:
    monkeypatch.delenv("CLOUDWINDOW_CONFIG", raising=False)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        load_settings()


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "cw.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(toml)


def test_generated_secret_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDWINDOW_CONFIG", raising=False)
    s = Settings(data_dir=tmp_path)
    first = s.resolved_secret_key()
    assert first == Settings(data_dir=tmp_path).resolved_secret_key()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_media_udp_gso_setting_reaches_the_send_path(settings: Settings, clock: FakeClock) -> None:
    try:
        create_app(
            settings.model_copy(update={"media": settings.media.model_copy(update={"udp_gso": False})}), clock=clock
        )
        assert not udpsend.gso_enabled()
        create_app(settings, clock=clock)
        assert udpsend.gso_enabled()  # the default (this kernel supports it)
    finally:
        udpsend.set_gso(True)
