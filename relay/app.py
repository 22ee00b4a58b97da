"""create_app(settings): routes, error handlers, and the lifespan that builds Redis -> Bus -> Hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay import api, logs, page
from relay.auth import Authenticator
from relay.bus import Bus, PubSubBus
from relay.cluster import ClusterBus, ClusterConfig, ShardedScripts, Topology
from relay.config import Settings
from relay.errors import InternalError, RelayError, Unavailable
from relay.hub import Hub
from relay.limits import Quotas
from relay.origins import cors_origins
from relay.protocol import reconnect_frame
from relay.rooms import Rooms
from relay.services import Services
from relay.ws import websocket_endpoint

logger = logging.getLogger("relay.app")

REDIS_MAX_CONNECTIONS = 64
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Longest wait between telling clients to reconnect and uvicorn's 1012 close (the wait ends as soon as
# every socket's writer has sent the notice; a socket that stopped reading is not waited for longer).
DRAIN_NOTICE_SECONDS = 1.0


def make_redis(settings: Settings) -> tuple[aioredis.Redis, aioredis.Redis]:
    """The process's Redis clients (commands, pub/sub): real ones, or fakeredis for the embedded mode."""
    if settings.redis_url is None:
        import fakeredis  # imported here: production replicas never load it

        embedded = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return embedded, embedded
    # A blocking pool: a burst waits for a free connection instead of failing with
    # "Too many connections" or opening hundreds of sockets.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        # RESP2: with hiredis (a dependency) it parses a pub/sub message in ~14 us of CPU against ~46 us
        # for redis-py's pure-Python RESP3 parser, and hiredis's RESP3 mode leaks on pub/sub messages.
        protocol=2,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=5,
        socket_connect_timeout=3,
        socket_timeout=5,
        socket_keepalive=True,
    )
    # The pub/sub link must not retry inside redis-py: the bus reconnects itself so that every
    # reconnection is seen, reported and followed by a resync from history.
    pubsub_pool = aioredis.ConnectionPool.from_url(
        settings.redis_url,
        protocol=2,
        max_connections=2,
        socket_connect_timeout=3,
        socket_timeout=5,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis(connection_pool=pool), aioredis.Redis(connection_pool=pubsub_pool)


def replica_name() -> str:
    """Pod name on Kubernetes (HOSTNAME), plus the worker's pid, plus a random suffix for restarts."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


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


def create_app(settings: Settings) -> Starlette:
    replica_id = replica_name()
    logs.replica["id"] = replica_id

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        topology: Topology | None = None
        bus: PubSubBus
        if settings.redis_cluster:
            assert settings.redis_url is not None
            config = ClusterConfig.from_url(settings.redis_url)
            topology = Topology(config)
            redis_client = pubsub_client = topology.client(config.seeds[0])
            rooms = Rooms(redis_client, settings, cluster=ShardedScripts(topology))
            bus = ClusterBus(topology, config, link_timeout=settings.redis_link_timeout)
        else:
            redis_client, pubsub_client = make_redis(settings)
            rooms = Rooms(redis_client, settings)
            bus = Bus(pubsub_client, link_timeout=settings.redis_link_timeout)
        hub = Hub(bus)
        services = Services(
            settings=settings,
            auth=Authenticator(settings),
            rooms=rooms,
            quotas=Quotas(redis_client, settings, rooms.scripts),
            bus=bus,
            hub=hub,
            replica_id=replica_id,
        )
        app.state.services = services
        if settings.is_embedded:
            logger.warning(
                "no REDIS_URL: running on the embedded in-process store, as a single replica; "
                "rooms are lost when this process stops"
            )
        if settings.dev_mode:
            logger.warning("development mode: accepting tokens signed with the local development secret")
        tasks = [
            asyncio.create_task(_supervise("hub", hub.run), name="hub"),
            asyncio.create_task(_supervise("presence", lambda: _refresh_presence(services)), name="presence"),
        ]
        _drain_on_sigterm(services)
        logger.info("replica %s started", replica_id)
        try:
            yield
        finally:
            services.is_draining = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await services.rooms.aclose()
            with contextlib.suppress(Exception):
                await bus.aclose()
            for client in {redis_client, pubsub_client}:
                with contextlib.suppress(Exception):
                    await client.aclose()
            if topology is not None:
                await topology.aclose()
            logger.info("replica %s stopped", replica_id)

    middleware = [Middleware(RequestIds)]
    origins = cors_origins(settings)
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[*api.routes, WebSocketRoute("/ws/{room_code}", websocket_endpoint), *page.routes(settings)],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            RelayError: _relay_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )


def create_app_from_env() -> Starlette:
    """uvicorn's factory: every worker process reads the same environment."""
    return create_app(Settings.from_environ())


async def _supervise(name: str, run: Callable[[], Awaitable[None]], restart_delay: float = 1.0) -> None:
    """Keep a background loop alive: a bug that escapes it is logged and the loop restarted, rather
    than leaving a replica that answers probes but no longer delivers anything."""
    while True:
        try:
            await run()
            return
        except Exception:
            logger.exception("background task %s failed; restarting it in %.1f s", name, restart_delay)
            await asyncio.sleep(restart_delay)


def _drain_on_sigterm(services: Services) -> None:
    """Put relay's first drain stage in front of uvicorn's SIGTERM handling.

    uvicorn closes every socket with 1012 as soon as it sees SIGTERM and runs the lifespan shutdown only
    after the handlers returned, so the lifespan is too late to warn anyone. This handler marks the
    replica not ready, sends every socket a `reconnect` frame, and hands the signal to uvicorn once every
    writer has sent it (at most DRAIN_NOTICE_SECONDS later), so the frames precede the 1012 close.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return  # not under uvicorn's signal capture (tests, embedding): nothing to chain to
    loop = asyncio.get_running_loop()
    hand_overs: set[asyncio.Task[None]] = set()  # a reference, so the task is not collected mid-way

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if services.is_draining:
            previous(signum, frame)
            return
        services.is_draining = True
        logger.info("SIGTERM: draining %d connections", services.hub.connection_count)
        sent = services.hub.broadcast_and_confirm(
            reconnect_frame("this replica is shutting down; reconnect with last_seq")
        )

        async def hand_over() -> None:
            # uvicorn closes every socket once it has the signal: first let the writers send the notice.
            if sent:
                await asyncio.wait(sent, timeout=DRAIN_NOTICE_SECONDS)
            previous(signum, frame)

        hand_overs.add(loop.create_task(hand_over()))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _refresh_presence(services: Services) -> None:
    """Re-mark this replica's connections present before their entries expire (a dead replica's don't).

    One script per room, spread over the interval so the refresh never arrives as one burst; entries
    that expired meanwhile (Redis was away) are added again, which re-checks membership and limits.
    """
    interval = services.settings.presence_ttl / 3
    while True:
        codes = services.hub.room_codes
        if not codes:
            await asyncio.sleep(interval)
            continue
        pause = interval / len(codes)
        for code in codes:
            await asyncio.sleep(pause)
            connections = {c.id: c for c in services.hub.connections(code)}
            if not connections:
                continue
            try:
                expired = await services.rooms.presence_refresh(
                    code, [(c.identity.user_id, c.id) for c in connections.values()]
                )
                for _, connection_id in expired:
                    connection = connections[connection_id]
                    try:
                        await services.rooms.presence_add(
                            code, connection.identity, connection.role, connection.id
                        )
                    except Unavailable:
                        raise
                    except RelayError as refusal:  # removed, or the room filled up while Redis was away
                        connection.kick(refusal)
            except Unavailable:
                continue  # Redis is away; the bus reports it, and the next round retries


async def _relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return api.error_response(exc)


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
    return api.JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return api.error_response(InternalError("internal error; it has been logged"))
