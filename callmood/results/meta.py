"""What is known of a call before it is scored, and the times it may have.

Times written without an offset are local times of the recorders' zone (``source_zone``);
results hold UTC, within YEARS.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import asdict, dataclass
from datetime import datetime, timezone, tzinfo


@dataclass(frozen=True)
class CallMeta:
    """What is known about a call before it is scored."""

    call_id: str
    agent_id: str | None
    queue: str | None
    started_at: datetime  # UTC
    customer_channel: int | None

    @property
    def call_date(self) -> str:
        return self.started_at.date().isoformat()

    def as_json(self) -> dict:
        return {**asdict(self), "started_at": self.started_at.isoformat()}

    @classmethod
    def from_json(cls, value: dict) -> CallMeta:
        return cls(**{**value, "started_at": datetime.fromisoformat(value["started_at"])})


def source_zone(name: str) -> tzinfo:
    """The zone that times written without an offset are read in (an IANA name)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as "
                         "Europe/Berlin or America/New_York") from None


YEARS = (1970, 2100)  # the times a call can have; anything else is a typo or a bad clock


def parse_time(text: str, zone: tzinfo) -> datetime:
    """An ISO 8601 time in UTC; without an offset it is a time in `zone`. Raises
    ValueError, with a message naming the value, for text that is no time or a time
    outside YEARS (checked before the conversion to UTC, which overflows at the ends of
    the calendar)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"{text!r} lies outside {YEARS[0]}-{YEARS[1]}")
    return (value.replace(tzinfo=zone) if value.tzinfo is None else value) \
        .astimezone(timezone.utc)
