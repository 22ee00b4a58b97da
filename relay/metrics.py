"""Prometheus metrics, served at /metrics.

Label values come from small fixed sets (frame types, error codes), never from user input, tokens or
room codes, so a client cannot blow up the series count or read a secret off a dashboard.

With several uvicorn workers in one container, prometheus-client's multiprocess mode aggregates every
worker's values (`relay serve` sets PROMETHEUS_MULTIPROC_DIR when --workers > 1).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS = Gauge(
    "relay_connections", "Open WebSocket connections on this replica", multiprocess_mode="livesum"
)
ROOMS = Gauge("relay_rooms", "Rooms with at least one local connection", multiprocess_mode="livesum")
FRAMES_RECEIVED = Counter("relay_frames_received_total", "Client frames accepted, by type", ["type"])
FRAMES_SENT = Counter(
    "relay_frames_sent_total",
    "Frames put in local send queues, by kind (durable: sequenced events; volatile: the rest)",
    ["kind"],
)
DELIVERY_LATENCY = Histogram(
    "relay_publish_to_deliver_seconds",
    "From a replica stamping an event to this replica queueing it for its sockets",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REDIS_ERRORS = Counter(
    "relay_redis_errors_total", "Redis commands that failed (connection, timeout, refusal)"
)
REDIS_RECONNECTS = Counter("relay_redis_reconnects_total", "Pub/sub links re-established after a loss")
REDIS_UP = Gauge(
    "relay_redis_up",
    "1 while the pub/sub link to Redis is up (in a cluster: every shard's)",
    multiprocess_mode="min",
)
# Redis Cluster: the label is a primary's address from the slot map (a handful, never user input).
REDIS_SHARD_UP = Gauge(
    "relay_redis_shard_up",
    "1 while the pub/sub link to this cluster shard is up",
    ["shard"],
    multiprocess_mode="min",
)
REDIS_SHARD_ERRORS = Counter(
    "relay_redis_shard_errors_total", "Script calls to this cluster shard that failed to reach it", ["shard"]
)
YJS_COMPACTIONS = Histogram(
    "relay_yjs_compaction_seconds", "Time to fold a room's Yjs updates into its snapshot and trim them"
)
SLOW_CONSUMERS = Counter("relay_slow_consumers_dropped_total", "Sockets closed for not reading")
REFUSALS = Counter(
    "relay_refusals_total", "Requests, handshakes and frames refused, by error code", ["reason"]
)
SHED = Counter(
    "relay_shed_total",
    "Work refused because this replica's measured queueing was too long (admission control), by kind",
    ["kind"],
)
QUEUEING = Gauge(
    "relay_queueing_seconds",
    "How long work waited on this replica over the last 50 ms: the larger of the event-loop lag and the "
    "longest wait in the Redis script queue",
    multiprocess_mode="max",
)
SHED_PROPORTION = Gauge(
    "relay_shed_proportion",
    "The proportion of frames this replica's admission control currently refuses (0 to 1)",
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, aggregating workers in multiprocess mode."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
