"""Supabase JWT verification: a bearer token in, an `Identity` out, or `Unauthorized`.

Algorithms are pinned by configuration, never taken from the token: HS256 only when a shared secret is
set, ES256/RS256 only when SUPABASE_URL gives a JWKS. The JWKS is fetched by PyJWT's synchronous client
on a worker thread, cached, and refreshed when a token names an unknown `kid` (at most once per
RELAY_JWKS_MIN_REFRESH seconds, so random `kid`s cannot turn relay into a request amplifier).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from relay.config import Settings
from relay.errors import TokenExpired, Unauthorized, Unavailable

logger = logging.getLogger("relay.auth")

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
# Clock skew tolerated between Supabase and this replica for exp / nbf / iat.
LEEWAY_SECONDS = 5
# A JWKS is re-read at least this often even when every kid is known, so a revoked key stops working.
JWKS_MAX_AGE_SECONDS = 600.0
# Supabase API keys are JWTs too; they carry one of these roles and must never act as a user.
API_KEY_ROLES = frozenset({"anon", "service_role"})
MAX_SUB_CHARS = 128


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for. `user_id` is the token's `sub`."""

    user_id: str
    user_name: str
    email: str | None
    is_interviewer: bool
    expires_at: float


class JwksCache:
    """Signing keys of a Supabase project, by `kid`, fetched off the event loop."""

    def __init__(self, url: str, min_refresh_seconds: float) -> None:
        # cache_jwk_set=False: the client only fetches; caching and cooldown live here, on the loop.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=5)
        self._url = url
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > JWKS_MAX_AGE_SECONDS
        if kid not in self._keys or stale:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized(f"token signed with an unknown key (kid {kid[:40]!r})") from None

    async def _refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            # Another caller may have refreshed while this one waited for the lock.
            if self._fetched_at is not None and now - self._fetched_at < self._min_refresh:
                return
            try:
                keys = await asyncio.to_thread(self._client.get_signing_keys, True)
            except jwt.PyJWKClientError as exc:
                if self._keys and self._fetched_at is not None:
                    # Keep serving the keys we have; a JWKS blip must not log everybody out.
                    logger.warning("jwks refresh failed, keeping %d cached keys: %s", len(self._keys), exc)
                    self._fetched_at = now
                    return
                logger.error("cannot fetch the JWKS from %s: %s", self._url, exc)
                raise Unavailable("cannot fetch the auth provider's signing keys; try again shortly") from exc
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = now
            logger.info("jwks loaded: %d signing keys", len(self._keys))


class Authenticator:
    """Verifies Supabase access tokens against the configured secret and/or JWKS."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._interviewer_claim = settings.interviewer_claim
        self._jwks = (
            JwksCache(settings.jwks_url, settings.jwks_min_refresh_seconds) if settings.jwks_url else None
        )

    @property
    def algorithms(self) -> frozenset[str]:
        allowed: set[str] = set()
        if self._secret is not None:
            allowed.add("HS256")
        if self._jwks is not None:
            allowed |= ASYMMETRIC_ALGORITHMS
        return frozenset(allowed)

    async def authenticate(self, token: str | None) -> Identity:
        if not token:
            raise Unauthorized("missing token: send 'Authorization: Bearer <access token>'")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("malformed token: expected a JWT (header.payload.signature)") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            allowed = ", ".join(sorted(self.algorithms))
            raise Unauthorized(
                f"token algorithm {str(algorithm)[:20]!r} is not accepted here (accepted: {allowed})"
            )
        key: Any
        if algorithm == "HS256":
            key = self._secret
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or self._jwks is None:
                raise Unauthorized("asymmetric token without a 'kid' header")
            key = await self._jwks.key(kid)
        claims = self._decode(token, key, algorithm)
        return self._identity(claims)

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token has expired: refresh the session and retry") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token is not valid yet (nbf / iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"token audience is not {self._audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"token issuer is not {self._issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim in {"sub", "aud"}:
                raise Unauthorized(
                    f"token has no {exc.claim!r} claim: Supabase anon / service_role keys are not user tokens"
                ) from None
            raise Unauthorized(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise Unauthorized("token has an empty 'sub' claim")
        if len(sub) > MAX_SUB_CHARS or not sub.isprintable():
            # Cut or odd ids could collide with another user's; Supabase's are 36-character UUIDs.
            raise Unauthorized(f"token 'sub' must be at most {MAX_SUB_CHARS} printable characters")
        if claims.get("role") in API_KEY_ROLES:
            raise Unauthorized("Supabase anon / service_role keys are not user tokens")
        metadata = claims.get("user_metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        name = next(
            (
                value.strip()[:100]
                for value in (metadata.get("full_name"), metadata.get("name"), email)
                if isinstance(value, str) and value.strip()
            ),
            sub[:100],
        )
        is_interviewer = self._interviewer_claim is not None and self._interviewer_claim.matches(claims)
        return Identity(
            user_id=sub,
            user_name=name,
            email=email,
            is_interviewer=is_interviewer,
            expires_at=float(claims["exp"]),
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def mint_dev_token(
    secret: str,
    user_id: str,
    *,
    name: str | None = None,
    email: str | None = None,
    ttl_seconds: int = 3600,
    extra_claims: Mapping[str, Any] | None = None,
    issuer: str | None = None,
) -> str:
    """An HS256 token shaped like a Supabase access token, for development mode and tests."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_seconds,
        "email": email or f"{user_id}@example.test",
        "user_metadata": {"full_name": name or user_id},
    }
    if issuer is not None:
        claims["iss"] = issuer
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256")
