"""Typed configuration: environment variables and an optional TOML file.

Precedence (highest first): explicit keyword arguments, environment variables
(``CLOUDWINDOW_`` prefix, ``__`` between nested keys, e.g.
``CLOUDWINDOW_OBJECT_STORE__S3__BUCKET``), the TOML file named by
``CLOUDWINDOW_CONFIG`` (or ``--config``), then the embedded defaults, which
need nothing installed: SQLite and a filesystem store under ``./data``.

``docs/operations.md`` is the reference for every key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: The TOML file given to :func:`load_settings` (overrides ``CLOUDWINDOW_CONFIG``).
_CONFIG_FILE: ContextVar[str | None] = ContextVar("cloudwindow_config_file", default=None)


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    bucket: str = "cloudwindow"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    #: Objects larger than this go up as multipart uploads of this part size.
    part_size: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    #: Create the bucket at start-up if it does not exist.
    create_bucket: bool = False


class RecordingSettings(BaseModel):
    """Live recording of case sessions (``recordings/``): per-track segments, remuxed, never transcoded."""

    model_config = ConfigDict(extra="forbid")

    #: Record every case session's media (participants are told; the case audit notes start and stop).
    enabled: bool = True
    #: Length of one segment file per track; a crash loses at most the open segment of each track.  1.5 s keeps
    #: the loss at a SIGKILL under 2 s (the open segment plus the writer's lag), at ~2,400 small objects per track
    #: and hour for the uploader and the join (10 s, the earlier default, lost up to 10 s).
    segment_seconds: float = Field(default=1.5, ge=0.5, le=300)
    #: Local spool of segment files and manifests; relative paths are under ``data_dir``.
    spool_dir: Path = Path("recordings")
    #: Frames one track may have queued for its writer before the recorder drops to the next keyframe.
    max_queue: int = Field(default=600, ge=10, le=100_000)
    #: Seconds between passes of the uploader (closed segments → object store, verified).
    upload_interval: float = Field(default=1.0, gt=0, le=3600)
    #: First retry delay after a failed upload; doubles per failure up to ``upload_retry_max``.
    upload_retry_base: float = Field(default=0.5, gt=0)
    upload_retry_max: float = Field(default=60.0, gt=0)
    #: The spool's bound: above it an alert is raised (logged at ERROR, metric ``cloudwindow_recording_space_alert``);
    #: nothing is deleted to make room. 0: no bound.
    spool_max_bytes: int = Field(default=20 * 1024**3, ge=0)
    #: Free space the spool's disk should keep; below it the same alert. 0: not checked.
    min_free_bytes: int = Field(default=1024**3, ge=0)
    #: Seconds between looks for post-session jobs (sessions ended: join each participant's segments and store them).
    job_interval: float = Field(default=2.0, gt=0, le=3600)
    #: Tries of a post-session job before it is marked failed (30 s, 60 s, ... between tries).
    job_attempts: int = Field(default=5, ge=1, le=100)
    #: Render the session composite (grid of participants, mixed audio; transcoded, in its own process).
    composite: bool = True
    composite_size: str = Field(default="640x480", pattern=r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")
    #: How much lower than the server the composite process runs (``nice``).
    composite_nice: int = Field(default=10, ge=0, le=19)
    #: Longest a composite may take before the job fails (and is retried).
    composite_timeout: float = Field(default=3600.0, gt=0)
    #: Seconds between retention purges (recordings past their matter's ``retention_days``, cases not on hold).
    purge_interval: float = Field(default=3600.0, gt=0)


class ObjectStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["filesystem", "s3"] = "filesystem"
    #: Root folder of the filesystem store; relative paths are under ``data_dir``.
    root: Path = Path("objects")
    s3: S3Settings = S3Settings()
    #: Lifetime of signed download URLs, seconds.
    signed_url_ttl: int = Field(default=300, ge=1, le=7 * 24 * 3600)


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token_ttl: int = Field(default=900, ge=30, description="seconds")
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=60, description="seconds")
    invite_ttl: int = Field(default=24 * 3600, ge=60, description="default invite lifetime, seconds")
    login_max_attempts: int = Field(default=5, ge=1)
    login_window: int = Field(default=300, ge=1, description="seconds")


class UploadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Global ceiling for one document, bytes; checklist items may set less.
    max_size: int = Field(default=50 * 1024 * 1024, ge=1)


class IceServerSettings(BaseModel):
    """One STUN/TURN server handed to clients (never a public one by default)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1)
    #: coturn ``static-auth-secret`` (``use-auth-secret``): clients get time-limited credentials.
    auth_secret: str | None = None
    username: str | None = None
    credential: str | None = None
    ttl: int = Field(default=3600, ge=60)


class MediaSettings(BaseModel):
    """The SFU's network: what it binds, what it advertises, what remote candidates it accepts."""

    model_config = ConfigDict(extra="forbid")

    #: Local addresses the SFU gathers host candidates on (empty: every interface aioice finds).
    host_addresses: list[str] = Field(default_factory=list)
    #: Remote candidates must fall in one of these networks.
    allowed_cidrs: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]
    )
    max_candidates: int = Field(default=20, ge=1, le=1000)
    allow_mdns: bool = False
    max_sdp_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    #: Seconds an offer may stay unanswered before the participant's connection is given up (the client rejoins).
    answer_timeout: float = Field(default=30, ge=1, le=600)
    #: Send a forwarded frame's packets in one UDP GSO sendmsg where the kernel allows (off: one sendto per packet).
    udp_gso: bool = True


class SignallingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_participants: int = Field(default=8, ge=2, le=32)
    #: Seconds a session may stay empty before it is ended.
    empty_session_timeout: float = Field(default=300, ge=1)
    chat_max_messages: int = Field(default=5, ge=1)
    chat_window: float = Field(default=5.0, gt=0)
    ice_servers: list[IceServerSettings] = Field(default_factory=list)
    #: Origins whose pages may open a Socket.IO connection; empty: only the server's own origin.
    allowed_origins: list[str] = Field(default_factory=list, max_length=32)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"not an origin (scheme://host[:port], no path): {origin!r}")
        return value


class AppointmentSettings(BaseModel):
    """Appointment rules; durations in seconds."""

    model_config = ConfigDict(extra="forbid")

    #: How far ahead a slot may be booked.
    horizon: int = Field(default=10 * 24 * 3600, ge=0)
    #: A booking may be cancelled until this long before its slot starts.
    cancel_deadline: int = Field(default=3 * 3600, ge=0)
    #: A booking not checked in by slot end + this becomes a no-show.
    no_show_grace: int = Field(default=15 * 60, ge=0)
    #: How long one no-show bars the ID number from booking.
    no_show_ban: int = Field(default=30 * 24 * 3600, ge=0)
    #: Check-in opens this long before the slot starts.
    check_in_early: int = Field(default=3600, ge=0)
    max_slot_capacity: int = Field(default=500, ge=1)
    max_slot_length: int = Field(default=24 * 3600, ge=60)


class QueueSettings(BaseModel):
    """Queue defaults; durations in seconds.  Departments and windows override thresholds in ``queue_policies``."""

    model_config = ConfigDict(extra="forbid")

    #: Seconds between scanner rounds; 0 disables the background scanner (tests call ``scan()`` themselves).
    scan_interval: float = Field(default=1.0, ge=0)
    #: Most due items of each kind one scanner round handles (the rest wait for the next round).
    scan_batch: int = Field(default=500, ge=1)
    #: Boards (``queue.changed``, ``queue.position``) of changed departments are sent at most this often, so a
    #: burst of calls costs one board per department, not one per call.
    board_interval: float = Field(default=0.25, ge=0)
    #: Most tickets listed in one ``queue.changed`` notice (positions go to every point in full).
    board_notice_tickets: int = Field(default=200, ge=0)
    #: How long a call rings at the service point before the ticket goes back to the head of the queue.
    ring_timeout: int = Field(default=60, ge=1)
    #: Unanswered rings after which the ticket becomes a no-show (0: never).
    max_unanswered: int = Field(default=3, ge=0)
    #: A ticket waiting this long raises the wait-timeout alert (DESIGN.md §2: 15 minutes).
    wait_limit: int = Field(default=15 * 60, ge=1)
    #: Queue length / longest wait (seconds) at which the status turns yellow or red (0: not used).
    yellow_length: int = Field(default=10, ge=0)
    red_length: int = Field(default=20, ge=0)
    yellow_wait: int = Field(default=10 * 60, ge=0)
    red_wait: int = Field(default=20 * 60, ge=0)
    #: Estimated waits use the mean call-to-finish time of this many recent tickets ...
    service_sample: int = Field(default=20, ge=1)
    #: ... or this many seconds when there are none yet.
    default_service_time: int = Field(default=300, ge=1)
    #: The longest a tidal window may be opened for.
    max_tidal_period: int = Field(default=12 * 3600, ge=60)
    #: Local time zone: ticket numbers restart each local day.
    timezone: str = "Asia/Shanghai"
    appointments: AppointmentSettings = AppointmentSettings()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value


class Settings(BaseSettings):
    """Everything the server reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDWINDOW_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Folder for the embedded defaults (SQLite file, filesystem store, secret key).
    data_dir: Path = Path("data")
    #: SQLAlchemy async URL. Default: SQLite file under ``data_dir``.
    database_url: str = ""
    #: Redis for several server processes (Socket.IO manager, shared rate limits).
    redis_url: str | None = None
    #: Prefix of every Redis key and channel (several deployments may share one Redis).
    redis_prefix: str = Field(default="cloudwindow", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: HMAC/JWT secret. Default: generated once into ``data_dir/secret_key``.
    secret_key: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Log format: ``json`` for production, ``text`` for a terminal.
    log_format: Literal["json", "text"] = "json"
    #: Serve the built web client from this folder when it exists.
    web_client_dist: Path = Path("web_client/dist")
    #: The server is reached only through a reverse proxy that appends the client's address to X-Forwarded-For:
    #: client addresses (audit, rate limits) are read from that header, from the right.
    trust_forwarded_for: bool = False
    #: Further proxies in front of that one (CIDRs): their entries in X-Forwarded-For are skipped, from the right,
    #: until the first address outside them, which is the client's.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(n, strict=False)) for n in value]

    auth: AuthSettings = AuthSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    upload: UploadSettings = UploadSettings()
    signalling: SignallingSettings = SignallingSettings()
    media: MediaSettings = MediaSettings()
    recording: RecordingSettings = RecordingSettings()
    queue: QueueSettings = QueueSettings()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = _CONFIG_FILE.get() or os.environ.get("CLOUDWINDOW_CONFIG")
        if config_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_path)))
        return tuple(sources)

    # -- derived values -------------------------------------------------

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cloudwindow.db').resolve()}"

    def resolved_object_root(self) -> Path:
        root = self.object_store.root
        return root if root.is_absolute() else (self.data_dir / root)

    def resolved_spool_dir(self) -> Path:
        spool = self.recording.spool_dir
        return spool if spool.is_absolute() else (self.data_dir / spool)

    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once and kept in ``data_dir``."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


class ConfigError(Exception):
    """Configuration is invalid; the message names every bad key."""


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate settings, turning pydantic errors into one clear message."""
    path = Path(config_file) if config_file is not None else None
    if path is None and os.environ.get("CLOUDWINDOW_CONFIG"):
        path = Path(os.environ["CLOUDWINDOW_CONFIG"])
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    token = _CONFIG_FILE.set(str(path) if path else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    finally:
        _CONFIG_FILE.reset(token)
