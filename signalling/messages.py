"""Payloads of client → server events (docs/protocol.md), validated on arrival."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Ids are 32-bit in the database (PostgreSQL ``integer``): a larger one cannot exist, and would fail the query.
MAX_ID = 2**31 - 1


class _Payload(BaseModel):
    """The rules every payload obeys, as REST bodies do: no unknown fields, no U+0000 in any text."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain NUL characters")
        return value


class Join(_Payload):
    session_id: int = Field(ge=1, le=MAX_ID)


class Leave(_Payload):
    pass


class Answer(_Payload):
    sdp: str = Field(min_length=1)
    revision: int = Field(ge=0, le=MAX_ID)


class Candidate(_Payload):
    candidate: str = Field(max_length=1024)
    sdpMid: str | None = Field(default=None, max_length=64)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=64)


class Publish(_Payload):
    label: Literal["screen"]


class Unpublish(_Payload):
    mid: str = Field(min_length=1, max_length=64)


class ChatSend(_Payload):
    text: str = Field(min_length=1, max_length=2000)


class Admit(_Payload):
    waiter_id: str = Field(min_length=1, max_length=32)


class RefuseWaiter(_Payload):
    waiter_id: str = Field(min_length=1, max_length=32)


class Mute(_Payload):
    participant_id: str = Field(min_length=1, max_length=32)
    muted: bool = True


class Remove(_Payload):
    participant_id: str = Field(min_length=1, max_length=32)


class AudioLevel(_Payload):
    """The participant's own microphone level, 0 (silence) to 1 (full scale), as the browser measures it."""

    level: float = Field(ge=0.0, le=1.0)
