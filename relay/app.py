"""create_app(settings), composition only: routes, middleware, and the lifespan that builds
Redis -> Bus -> Hub and hands the background work to lifecycle.py."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from relay import api, lifecycle, logs, page
from relay.admission import Admission
from relay.auth import Authenticator
from relay.bus import Bus, PubSubBus
from relay.cluster import ClusterBus, ClusterConfig, ShardedScripts, Topology
from relay.config import MultiNodeURL, Settings
from relay.expiry import TokenClock
from relay.hub import Hub
from relay.limits import Quotas
from relay.origins import cors_origins
from relay.rooms import Rooms
from relay.services import Services
from relay.ws import websocket_endpoint
from relay.yjs_store import YjsStore
from relay.yjs_ws import yjs_endpoint

logger = logging.getLogger("relay.app")

REDIS_MAX_CONNECTIONS = 64


def make_redis(settings: Settings) -> tuple[aioredis.Redis, aioredis.Redis]:
    """The process's Redis clients (commands, pub/sub): real ones, or fakeredis for the embedded mode."""
    if settings.redis_url is None:
        import fakeredis  # imported here: production replicas never load it

        embedded = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return embedded, embedded
    if settings.redis_sentinel:
        return _sentinel_clients(MultiNodeURL.parse(settings.redis_url))
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


def _sentinel_clients(url: MultiNodeURL) -> tuple[aioredis.Redis, aioredis.Redis]:
    """Clients of the primary that the sentinels name: after a failover, the next connection goes to the
    promoted replica (redis-py asks the sentinels again), while connections to the old primary fail and
    are reported like any Redis outage (503 / redis_status, then a resync from history)."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(node.rpartition(":")[0], int(node.rpartition(":")[2])) for node in url.nodes],
        sentinel_kwargs={"socket_connect_timeout": 3, "socket_timeout": 3},
    )
    common: dict[str, Any] = {
        "username": url.username,
        "password": url.password,
        "db": url.db,
        "protocol": 2,  # as for one Redis (make_redis says why)
        "socket_connect_timeout": 3,
        "socket_timeout": 5,
        "socket_keepalive": True,
    }
    if url.tls:
        common["ssl"] = True
    # One pipeline writer uses these, so the pool stays small; the pub/sub one never retries inside
    # redis-py (make_redis says why).
    commands = sentinel.master_for(url.service, max_connections=REDIS_MAX_CONNECTIONS, **common)
    pubsub = sentinel.master_for(url.service, max_connections=2, retry=Retry(NoBackoff(), 0), **common)
    return commands, pubsub


def replica_name() -> str:
    """Pod name on Kubernetes (HOSTNAME), plus the worker's pid, plus a random suffix for restarts."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


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
            scripts = ShardedScripts(
                topology,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_ms=settings.redis_wait_timeout_ms,
            )
            rooms = Rooms(redis_client, settings, cluster=scripts)
            bus = ClusterBus(topology, config, link_timeout=settings.redis_link_timeout)
        else:
            redis_client, pubsub_client = make_redis(settings)
            rooms = Rooms(redis_client, settings)
            bus = Bus(pubsub_client, link_timeout=settings.redis_link_timeout)
        admission = Admission(
            shed_sockets_at=settings.shed_sockets_ms / 1000,
            shed_frames_at=settings.shed_frames_ms / 1000,
            retry_after=settings.shed_retry_after,
            store_wait=rooms.scripts.take_longest_wait,
        )
        hub = Hub(bus)
        yjs = YjsStore(redis_client, rooms, settings, sharded_publish=settings.redis_cluster)
        services = Services(
            settings=settings,
            auth=Authenticator(settings),
            rooms=rooms,
            quotas=Quotas(redis_client, settings, rooms.scripts, sharded=settings.redis_cluster),
            bus=bus,
            hub=hub,
            admission=admission,
            yjs=yjs,
            replica_id=replica_id,
            tokens=TokenClock(settings.token_expiry_warning, settings.token_grace),
        )
        app.state.services = services
        if settings.is_embedded:
            logger.warning(
                "no REDIS_URL: running on the embedded in-process store, as a single replica; "
                "rooms are lost when this process stops"
            )
        if settings.dev_mode:
            logger.warning("development mode: accepting tokens signed with the local development secret")
        tasks = lifecycle.start(services)
        logger.info("replica %s started", replica_id)
        try:
            yield
        finally:
            await lifecycle.stop(services, tasks)
            with contextlib.suppress(Exception):
                await yjs.aclose()
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

    middleware = [Middleware(api.RequestIds)]
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
    return RelayApp(
        routes=[
            *api.routes,
            WebSocketRoute("/ws/{room_code}", websocket_endpoint),
            WebSocketRoute("/yjs/{room_code}", yjs_endpoint),
            *page.routes(settings),
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=api.exception_handlers,
    )


class RelayApp(Starlette):
    """Starlette, except that a socket of /ws/{code} or /yjs/{code} goes straight to its endpoint.

    Starlette's stack (error middleware, request ids, CORS, exception middleware, router, route) does
    nothing for these sockets, which handle their own errors and close codes, yet each layer kept a
    suspended coroutine frame for the socket's whole life (about 5 KB per idle socket, tracemalloc) and
    each send went through its wrappers. Anything else (HTTP, a path under a root_path) takes the
    usual way; the routes stay declared, so `app.routes` still lists them.
    """

    _SOCKET_ENDPOINTS: ClassVar[dict[str, Callable[[WebSocket], Awaitable[None]]]] = {
        "ws": websocket_endpoint,
        "yjs": yjs_endpoint,
    }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match = _SOCKET_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                scope["path_params"] = {"room_code": match["code"]}
                await self._SOCKET_ENDPOINTS[match["kind"]](WebSocket(scope, receive, send))
                return
        await super().__call__(scope, receive, send)


_SOCKET_PATH = re.compile(r"/(?P<kind>ws|yjs)/(?P<code>[^/]+)")


def create_app_from_env() -> Starlette:
    """uvicorn's factory: every worker process reads the same environment."""
    return create_app(Settings.from_environ())
