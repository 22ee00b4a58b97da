"""The interview page at `/` (built from web/ into relay/static) and development sign-in.

The page is on in development mode and off in production unless RELAY_SERVE_PAGE=true; `POST
/api/dev/token` exists only in development mode (404 otherwise: it mints tokens for anyone who asks).
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from relay import api
from relay.auth import mint_dev_token
from relay.config import DEV_JWT_SECRET, Settings
from relay.errors import BadRequest

STATIC_DIR = Path(__file__).parent / "static"
# Development tokens from the page live for a working day; the page mints a new one when it expires.
DEV_TOKEN_TTL_SECONDS = 12 * 3600
DEV_TOKEN_FIELDS = {"name", "role", "user_id"}
ROLES = ("interviewer", "candidate")
MAX_NAME_CHARS = 80
_USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

# The page talks only to its own origin (REST and the Yjs WebSocket); CodeMirror injects its styles.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new relay version may ship a new bundle: revalidate (ETag) rather than run a stale one.
    "Cache-Control": "no-cache",
}


class PageFiles(StaticFiles):
    """relay/static with the page's security and caching headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers[name] = value
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def routes(settings: Settings) -> list[BaseRoute]:
    """The page's routes for these settings (none at all when both the page and dev mode are off)."""
    found: list[BaseRoute] = []
    if settings.serve_page:
        index = _render_index(settings)

        async def index_page(request: Request) -> Response:
            return Response(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

        found += [
            Route("/", index_page, methods=["GET", "HEAD"]),
            # The bundle is ~0.9 MB of JavaScript, ~0.3 MB gzipped.
            Mount(
                "/static",
                app=GZipMiddleware(PageFiles(directory=STATIC_DIR, check_dir=True), minimum_size=1024),
                name="static",
            ),
        ]
    if settings.dev_mode:
        found.append(Route("/api/dev/token", dev_token, methods=["POST"]))
    return found


def _render_index(settings: Settings) -> bytes:
    path = STATIC_DIR / "index.html"
    if not path.is_file():
        raise RuntimeError(
            f"RELAY_SERVE_PAGE is on but {path} is missing: this relay was installed without its page "
            "(rebuild it with `npm ci && npm run build` in web/, or set RELAY_SERVE_PAGE=false)"
        )
    html = path.read_text(encoding="utf-8")
    return html.replace("__DEV_SIGNIN__", "true" if settings.dev_mode else "false").encode()


async def dev_token(request: Request) -> Response:
    """Mint a development token: `{"name": "Alice", "role": "interviewer"|"candidate", "user_id"?}`.

    `user_id` defaults to one derived from the name, so signing in again as the same name is the same
    member. An interviewer's token carries the RELAY_INTERVIEWER_CLAIM claim, like `relay token
    --interviewer`.
    """
    settings: Settings = request.app.state.services.settings
    body = await api._json_body(request)
    unknown = sorted(set(body) - DEV_TOKEN_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; accepted: name, role, user_id")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_CHARS:
        raise BadRequest(f"name must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    name = name.strip()
    role = body.get("role", "candidate")
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    user_id = body.get("user_id") or _user_id_for(name)
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise BadRequest("user_id must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
    claims: dict[str, object] = {}
    if role == "interviewer" and settings.interviewer_claim is not None:
        claims = settings.interviewer_claim.as_claims()
    token = mint_dev_token(
        settings.jwt_secret or DEV_JWT_SECRET,
        user_id,
        name=name,
        ttl_seconds=DEV_TOKEN_TTL_SECONDS,
        extra_claims=claims,
        issuer=settings.jwt_issuer,
    )
    identity = await request.app.state.services.auth.authenticate(token)
    return api.JSONResponse(
        {
            "status": "success",
            "token": token,
            "user_id": identity.user_id,
            "user_name": identity.user_name,
            "role": role,
            "is_interviewer": identity.is_interviewer,
            "expires_at": int(identity.expires_at),
        }
    )


def _user_id_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48]
    return f"dev-{slug or 'user'}"
