"""The REST endpoints under /api, with the response shapes of the product relay replaces, and the HTTP
error handlers and request-id middleware that app.py mounts.

Answers carry relay's own fields plus, as additions, the fields the old backend's frontend reads
(`room_info`, `interviewer`, `candidate`, `status`, `editor_content`; `detail` on errors).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay import logs, metrics
from relay.auth import Identity, bearer_token
from relay.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    RateLimited,
    RelayError,
    RoomNotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from relay.keys import normalize_code
from relay.rooms import INTERVIEWER
from relay.services import Services

logger = logging.getLogger("relay.api")

MAX_BODY_BYTES = 16 * 1024
# Below the usual readiness-probe timeout (1 s), so a slow Redis reads as "not ready", not as a hung pod.
READY_PING_TIMEOUT = 0.8
CREATE_ROOM_FIELDS = {"title": 200, "language": 40}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: RelayError) -> JSONResponse:
    metrics.REFUSALS.labels(error.code).inc()
    headers = None
    if isinstance(error, RateLimited) and error.retry_after is not None:
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(error.as_dict(), status_code=error.http_status, headers=headers)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _identity(request: Request) -> Identity:
    header = request.headers.get("authorization")
    token = bearer_token(header)
    if header and token is None:
        raise Unauthorized("Authorization header must be 'Bearer <access token>'")
    return await _services(request).auth.authenticate(token)


async def _json_body(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge(f"request body exceeds {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
    return data


async def create_room(request: Request) -> Response:
    services = _services(request)
    identity = await _identity(request)
    if services.settings.create_requires_interviewer and not identity.is_interviewer:
        raise Forbidden(f"creating rooms needs the interviewer claim ({services.settings.interviewer_claim})")
    body = await _json_body(request)
    unknown = sorted(set(body) - set(CREATE_ROOM_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(CREATE_ROOM_FIELDS)}")
    options: dict[str, str] = {}
    for name, limit in CREATE_ROOM_FIELDS.items():
        value = body.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            raise BadRequest(f"{name} must be a string of at most {limit} characters")
        options[name] = value
    await services.quotas.count_room_creation(identity.user_id)
    room = await services.rooms.create(identity, title=options["title"], language=options["language"])
    logger.info("room %s created by %s", room.code, identity.user_id)
    return JSONResponse(
        {
            "status": "success",
            "message": "Room created successfully",
            "room_code": room.code,
            "role": INTERVIEWER,
            "created_at": room.created_at,
            "title": room.title,
            "language": room.language,
            "ws_path": f"/ws/{room.code}",
        },
        status_code=200,
    )


async def join_room(request: Request) -> Response:
    services = _services(request)
    identity = await _identity(request)
    body = await _json_body(request)
    if "room_code" not in body:
        raise BadRequest('body must be {"room_code": "ABC123"}')
    code = normalize_code(body["room_code"])
    address = request.client.host if request.client else None
    await services.quotas.check_join(identity.user_id, address)
    try:
        member, is_new = await services.rooms.join(code, identity)
    except RoomNotFound:
        # Guessing codes shows up as many joins of rooms that do not exist.
        await services.quotas.count_join_failure(identity.user_id, address)
        raise
    if is_new:
        logger.info("user %s joined room %s as %s", identity.user_id, code, member.role)
    snapshot = await services.yjs.snapshot(code, None)
    room_info = snapshot.room_info()
    del room_info["status"]  # the old backend's join answer had no status
    return JSONResponse(
        {
            "status": "success",
            "message": "Joined room successfully" if is_new else "Already a member of this room",
            "room_code": code,
            "role": member.role,
            "ws_path": f"/ws/{code}",
            "room_info": room_info,
        }
    )


async def get_room(request: Request) -> Response:
    services = _services(request)
    identity = await _identity(request)
    code = normalize_code(request.path_params["code"])
    snapshot = await services.yjs.snapshot(code, None)
    info = snapshot.info
    if all(member.user_id != identity.user_id for member in info.members):
        raise Forbidden(f"only members of room {code} may see it: join it first (POST /api/join-room)")
    # `status` is the room's state in the old backend's words (the frontend compares it with
    # "waiting_for_candidate"); relay's own view of it is `room_status`, and success is the HTTP 200.
    return JSONResponse(
        {
            "status": info.legacy_status,
            **info.as_dict(),
            "interviewer": info.interviewer,
            "candidate": info.candidate,
            "editor_content": snapshot.content,
        }
    )


async def get_monitoring(request: Request) -> Response:
    """The room's candidate monitoring data, in the old backend's shape: its interviewers only."""
    services = _services(request)
    identity = await _identity(request)
    code = normalize_code(request.path_params["code"])
    report = await services.rooms.monitoring(code, identity.user_id)
    return JSONResponse({"status": "success", **report.as_dict()})


async def delete_room(request: Request) -> Response:
    services = _services(request)
    identity = await _identity(request)
    code = normalize_code(request.path_params["code"])
    member = await services.rooms.member(code, identity.user_id)
    if member.role != INTERVIEWER:
        raise Forbidden(f"only an interviewer may close room {code}")
    seq = await services.rooms.close(code)
    logger.info("room %s closed by %s", code, identity.user_id)
    return JSONResponse({"status": "success", "message": "Room closed", "room_code": code, "seq": seq})


async def remove_member(request: Request) -> Response:
    services = _services(request)
    identity = await _identity(request)
    code = normalize_code(request.path_params["code"])
    user_id = request.path_params["user_id"]
    member = await services.rooms.member(code, identity.user_id)
    if member.role != INTERVIEWER:
        raise Forbidden(f"only an interviewer may remove members of room {code}")
    if user_id == identity.user_id:
        raise Forbidden("you cannot remove yourself; close the room instead (DELETE /api/room/{code})")
    await services.rooms.remove_member(code, user_id)
    logger.info("user %s removed from room %s by %s", user_id, code, identity.user_id)
    return JSONResponse(
        {"status": "success", "message": "Member removed", "room_code": code, "user_id": user_id}
    )


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition; keep it off the public ingress (only the cluster's scraper needs it)."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


async def health(request: Request) -> Response:
    """Liveness: the process answers. Never touches Redis, so a Redis outage restarts no pod."""
    services = _services(request)
    return JSONResponse({"status": "ok", "replica": services.replica_id})


async def ready(request: Request) -> Response:
    """Readiness: Redis answers, the pub/sub link is up and the replica is not draining.

    On a Redis Cluster, a shard that is down makes the replica "degraded", still 200: every replica sees
    the same shard down, and taking them all out of the load balancer would stop the rooms of every
    other shard too. The body names each shard; `?room=CODE` answers 503 when that room's shard is down.
    """
    services = _services(request)
    shards = await _shard_report(services)
    problems = []
    if services.is_draining:
        problems.append("draining")
    if shards is None:
        if not services.bus.has_redis:
            problems.append("pub/sub link to Redis is down")
        try:
            await asyncio.wait_for(services.rooms.ping(), READY_PING_TIMEOUT)
        except (Unavailable, TimeoutError):
            problems.append("Redis does not answer")
    else:
        down = [f"shard {address} is down: {state}" for address, state in shards.items() if state != "up"]
        if not shards or len(down) == len(shards):
            problems.append("no Redis Cluster shard is reachable")
        room = request.query_params.get("room")
        if room is not None:
            code = normalize_code(room)
            address = services.rooms.shard_address(code)
            if address is None or shards.get(address) != "up":
                problems.append(f"room {code}'s shard {address or '(unknown)'} is down")
        if problems:
            problems += down
    if problems:
        body: dict[str, Any] = {"status": "unavailable", "problems": problems}
        if shards is not None:
            body["shards"] = shards
        return JSONResponse(body, status_code=503)
    body = {
        "status": "ready",
        "replica": services.replica_id,
        "connections": services.hub.connection_count,
        "rooms": len(services.hub.room_codes),
    }
    if shards is not None:
        body["shards"] = shards
        if any(state != "up" for state in shards.values()):
            body["status"] = "degraded"
    return JSONResponse(body)


async def _shard_report(services: Services) -> dict[str, str] | None:
    """Each cluster primary: "up", or what is wrong (commands or pub/sub). None for one Redis."""
    health = await services.rooms.shard_health(READY_PING_TIMEOUT)
    if health is None:
        return None
    links = services.bus.shard_status()
    report = {}
    for address in sorted(set(health) | set(links)):
        problem = health.get(address, "did not answer in time")
        if problem is not None:
            report[address] = f"commands fail ({problem})"
        elif not links.get(address, False):
            report[address] = "pub/sub link is down"
        else:
            report[address] = "up"
    return report


# --- what every HTTP request goes through -------------------------------------------------------------


class RequestIds:
    """ASGI middleware: a request id per HTTP request (the caller's X-Request-ID when it is sane)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        token = logs.request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


async def _relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    # The path is not echoed: it may hold whatever a client put there, tokens included.
    message = exc.detail if exc.status_code != 404 else "no such endpoint: see README for the API"
    body: dict[str, Any] = {
        "status": "error",
        "code": codes.get(exc.status_code, "http_error"),
        "message": message,
        "detail": message,
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("internal error; it has been logged"))


exception_handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    RelayError: _relay_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}

routes = [
    Route("/api/create-room", create_room, methods=["POST"]),
    Route("/api/join-room", join_room, methods=["POST"]),
    Route("/api/room/{code}", get_room, methods=["GET"]),
    Route("/api/room/{code}", delete_room, methods=["DELETE"]),
    Route("/api/room/{code}/monitoring", get_monitoring, methods=["GET"]),
    Route("/api/room/{code}/members/{user_id}", remove_member, methods=["DELETE"]),
    Route("/api/health", health, methods=["GET"]),
    Route("/api/ready", ready, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
]
