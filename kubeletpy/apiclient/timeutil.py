"""Kubernetes timestamps: `Time` (RFC 3339, seconds) and `MicroTime` (microseconds, used by Leases)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


def rfc3339(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def micro_time(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: Any) -> float | None:
    """Seconds since the epoch, or None for empty/malformed values."""
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
