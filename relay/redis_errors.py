"""Redis failures as relay errors: a Redis that is down or refusing writes is the client's 503, not a 500."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis.exceptions

from relay import metrics
from relay.errors import Unavailable

logger = logging.getLogger("relay.redis")

P = ParamSpec("P")
T = TypeVar("T")


def unavailable_for(error: BaseException, during: str) -> Unavailable | None:
    """The client's `Unavailable` for a Redis failure (down, timing out, refusing writes), logged and
    counted; None for any other error (a bug, or an answer the caller must read itself)."""
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        logger.warning("redis unavailable during %s: %s", during, error)
        metrics.REDIS_ERRORS.inc()
        return Unavailable("room storage is unavailable; retry shortly")
    if isinstance(error, redis.exceptions.ResponseError) and any(
        refusal in str(error) for refusal in ("OOM", "READONLY", "LOADING")
    ):
        logger.warning("redis refused a write during %s: %s", during, error)
        metrics.REDIS_ERRORS.inc()
        return Unavailable("room storage refused the write; retry shortly")
    return None


def redis_unavailable_is_503(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis being down is the client's 503 / close 1013 ("try again"), never a traceback."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            unavailable = unavailable_for(exc, method.__name__)
            if unavailable is None:
                raise
            raise unavailable from None

    return wrapper
