"""Times as the project writes them: ISO-8601 UTC to the second (``2026-11-26T03:04:05Z``).

One helper for records, events, pages and the dashboard, so every time a nurse or an export
reads has the same shape. Pure: no Flask, no Redis (the conversation core uses it)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ts: float | None) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SSZ``; "" for None or 0 (not known)."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
