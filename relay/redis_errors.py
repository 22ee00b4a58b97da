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


def redis_unavailable_is_503(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis being down is the client's 503 / close 1013 ("try again"), never a traceback."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning("redis unavailable during %s: %s", method.__name__, exc)
            metrics.REDIS_ERRORS.inc()
            raise Unavailable("room storage is unavailable; retry shortly") from None
        except redis.exceptions.ResponseError as exc:
            if "OOM" in str(exc) or "READONLY" in str(exc) or "LOADING" in str(exc):
                logger.warning("redis refused a write during %s: %s", method.__name__, exc)
                metrics.REDIS_ERRORS.inc()
                raise Unavailable("room storage refused the write; retry shortly") from None
            raise

    return wrapper
