"""Validation shared by the blocks."""

from __future__ import annotations

from urllib.parse import urlparse


def http_url(value: str, example: str) -> str:
    """A stripped http(s) URL without a trailing slash; ValueError naming `base_url` otherwise."""
    value = value.strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"base_url must be an http(s) URL such as {example}, got {value!r}")
    return value
