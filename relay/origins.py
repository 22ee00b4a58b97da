"""Which browser origins may call the API and open WebSockets (CORS and the WebSocket Origin check)."""

from __future__ import annotations

from urllib.parse import urlsplit

from relay.config import Settings


def origin_allowed(settings: Settings, origin: str | None, host: str | None) -> bool:
    """True when a handshake from `origin` may proceed.

    No Origin header: not a browser (browsers always send one on WebSockets), so there is no
    cross-site page to protect against. With RELAY_ALLOWED_ORIGINS set, only those origins pass; unset,
    development mode allows any origin and production mode only the service's own origin.
    """
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if settings.allowed_origins:
        return "*" in settings.allowed_origins or origin in settings.allowed_origins
    if settings.dev_mode:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def cors_origins(settings: Settings) -> list[str]:
    if settings.allowed_origins:
        return list(settings.allowed_origins)
    return ["*"] if settings.dev_mode else []
