"""The error tree: every refusal relay makes, with its HTTP status and WebSocket close code.

A handler raises one of these; the HTTP layer turns it into `{"status": "error", "code", "message",
"detail"}` with `http_status` (`detail` repeats `message` for the frontend written against the old
backend, which shows an error body's `detail`), the WebSocket layer into an `error` frame or a close
with `close_code`. Close codes in 4000-4999 are relay's own and mirror the HTTP status (4401 ~ 401)
so a client can treat both alike.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error a client may see. `message` is safe to show: it never holds a secret."""

    code = "error"
    http_status = 400
    close_code = 4400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, object]:
        return {"status": "error", "code": self.code, "message": self.message, "detail": self.message}


class BadRequest(RelayError):
    code = "bad_request"
    http_status = 422
    close_code = 4400


class BadFrame(BadRequest):
    """A WebSocket frame that is not a valid client frame; the connection stays usable."""

    code = "bad_frame"


class Unauthorized(RelayError):
    code = "unauthorized"
    http_status = 401
    close_code = 4401


class TokenExpired(Unauthorized):
    code = "token_expired"


class Forbidden(RelayError):
    code = "forbidden"
    http_status = 403
    close_code = 4403


class NotMember(Forbidden):
    code = "not_member"


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class RoomNotFound(RelayError):
    code = "room_not_found"
    http_status = 404
    close_code = 4404


class MemberNotFound(RelayError):
    code = "member_not_found"
    http_status = 404
    close_code = 4404


class RoomClosed(RelayError):
    code = "room_closed"
    http_status = 410
    close_code = 4410


class TooLarge(RelayError):
    code = "too_large"
    http_status = 413
    close_code = 1009  # RFC 6455 "message too big"


class RateLimited(RelayError):
    code = "rate_limited"
    http_status = 429
    close_code = 4429

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RoomFull(RelayError):
    code = "room_full"
    http_status = 409
    close_code = 4409


class CandidateTaken(RoomFull):
    """The room already has its RELAY_MAX_CANDIDATES candidates; interviewers may still join."""

    code = "candidate_taken"


class MemberRemoved(Forbidden):
    code = "member_removed"


class Unavailable(RelayError):
    """Redis is unreachable or the replica is draining: retry, possibly on another replica."""

    code = "unavailable"
    http_status = 503
    close_code = 1013  # RFC 6455 "try again later"


class Overloaded(Unavailable):
    """The replica's measured queueing is too long (admission.py): retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlowConsumer(RelayError):
    code = "slow_consumer"
    http_status = 503
    close_code = 4408


class InternalError(RelayError):
    """A bug on relay's side; the message never carries the traceback (that goes to the log)."""

    code = "internal"
    http_status = 500
    close_code = 1011
