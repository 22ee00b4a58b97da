"""Settings: read once from the environment (and an optional .env file), frozen, validated.

Every setting has one name, used in the environment, in `.env` and in README's configuration table.
A bad value stops start-up with a `ConfigError` whose message names the setting, what was expected
and what arrived.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import starlette.config

# The secret that development mode signs and verifies tokens with when no SUPABASE_JWT_SECRET is set.
# Public on purpose (it is in the repository): production mode refuses to start with it.
DEV_JWT_SECRET = "relay-dev-secret-0123456789abcdef-not-for-production"  # noqa: S105 - public on purpose

# In development mode, unless RELAY_INTERVIEWER_CLAIM says otherwise, this claim marks interviewers (what
# `relay token --interviewer` and the page's development sign-in put in a token).
DEV_INTERVIEWER_CLAIM = "app_metadata.role=interviewer"

# HS256 secrets shorter than this are brute-forceable offline from a single captured token.
MIN_HS256_SECRET_BYTES = 32

# The longest RELAY_TOKEN_GRACE allowed: a socket outliving its token by more than a working day is
# not "an interview that outlasted a one-hour token" any more.
MAX_TOKEN_GRACE_SECONDS = 12 * 3600

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = {"critical", "error", "warning", "info", "debug", "trace"}


class ConfigError(Exception):
    """A setting has a value relay cannot run with; the message names the setting."""


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def url_scheme(url: str) -> str:
    """A URL's scheme, lower-cased, without parsing the rest (a multi-host Redis URL may not survive
    urlsplit: see MultiNodeURL.parse)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


@dataclass(frozen=True, slots=True)
class MultiNodeURL:
    """A Redis URL naming several nodes, which relay asks where the primaries are:

    - `redis+cluster://[user:password@]host:port,host:port` a Redis Cluster; the nodes are seeds.
    - `redis+sentinel://[user:password@]host:port,host:port/service[/db]` Sentinel-managed Redis; the
      nodes are the sentinels, `service` the name they monitor (credentials are the Redis nodes').
    `rediss+` for TLS to the Redis nodes.
    """

    scheme: str
    nodes: tuple[str, ...]  # "host:port"
    username: str | None
    password: str | None = field(repr=False)
    service: str = ""  # Sentinel only
    db: int = 0

    @property
    def is_cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss+")

    @property
    def seeds(self) -> tuple[str, ...]:
        return self.nodes

    @classmethod
    def parse(cls, url: str) -> MultiNodeURL:
        """Raises ValueError naming what is wrong (never echoing the password)."""
        # Split by hand, not with urlsplit: Pythons that check bracketed hosts (gh-103848; e.g. Debian's
        # 3.11.2) refuse a netloc that lists several hosts when one is a bracketed IPv6 address.
        scheme, rest = url_scheme(url), url.partition("://")[2]
        if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
            raise ValueError(
                "expected redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://, "
                f"got {scheme!r}"
            )
        netloc_end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
        netloc, path_text = rest[:netloc_end], rest[netloc_end:].partition("?")[0].partition("#")[0]
        credentials, _, hosts = netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        nodes = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"each node must be host:port, got {item.strip()!r}")
            nodes.append(f"{host.strip('[]')}:{int(port)}")
        path = [part for part in path_text.split("/") if part]
        service, db = "", 0
        if scheme in CLUSTER_SCHEMES:
            if path not in ([], ["0"]):
                raise ValueError("Redis Cluster has only database 0; drop the path from the URL")
        else:
            if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
                raise ValueError("a Sentinel URL ends with /<service name>[/<db>], e.g. /mymaster/0")
            service, db = unquote(path[0]), int(path[1]) if len(path) == 2 else 0
        return cls(
            scheme=scheme,
            nodes=tuple(nodes),
            username=unquote(username) or None,
            password=unquote(password) or None,
            service=service,
            db=db,
        )


@dataclass(frozen=True, slots=True)
class InterviewerClaim:
    """A token claim that marks its bearer as an interviewer, e.g. `app_metadata.role=interviewer`."""

    path: tuple[str, ...]
    value: str

    @classmethod
    def parse(cls, text: str) -> InterviewerClaim:
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(
                f"RELAY_INTERVIEWER_CLAIM must look like 'claim.path=value' "
                f"(e.g. app_metadata.role=interviewer), got {text!r}"
            )
        return cls(path=tuple(part for part in name.strip().split(".")), value=value.strip())

    def matches(self, claims: Mapping[str, object]) -> bool:
        node: object = claims
        for part in self.path:
            if not isinstance(node, Mapping):
                return False
            node = node.get(part)
        if isinstance(node, list):
            return self.value in [str(item) for item in node]
        return node is not None and str(node) == self.value

    def as_claims(self) -> dict[str, object]:
        """The claims a token needs to match, e.g. {"app_metadata": {"role": "interviewer"}}."""
        claims: dict[str, object] = {self.path[-1]: self.value}
        for part in reversed(self.path[:-1]):
            claims = {part: claims}
        return claims

    def __str__(self) -> str:
        return f"{'.'.join(self.path)}={self.value}"


@dataclass(frozen=True)
class Settings:
    # Serving
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on all interfaces
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    log_format: str = "auto"  # json | text | auto (text on a terminal, JSON otherwise)

    # Auth
    dev_mode: bool = False
    supabase_url: str | None = None
    supabase_anon_key: str | None = None
    jwt_secret: str | None = None
    jwt_audience: str = "authenticated"
    jwks_min_refresh_seconds: float = 30.0
    interviewer_claim: InterviewerClaim | None = None
    create_requires_interviewer: bool = False
    allowed_origins: tuple[str, ...] = ()
    serve_page: bool = False

    # Redis and rooms
    redis_url: str | None = None
    room_ttl: int = 24 * 3600
    closed_room_ttl: int = 3600
    history_max_events: int = 500
    history_max_age: int = 600
    presence_ttl: int = 30
    redis_link_timeout: float = 10.0
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 500
    # Yjs: compact a room's document once this many updates are unfolded, keeping the newest `keep`
    yjs_compact_after: int = 500
    yjs_compact_keep: int = 100
    # Yjs: how long whole-document clients wait for the text after Yjs edits (coalescing window)
    yjs_text_delay: float = 0.15
    # Whole-document edits are merged (not last-writer-wins) in rooms a Yjs client edits ("yjs"), or in
    # every room ("always")
    whole_document_merge: str = "yjs"

    # Connections and limits
    rate_per_second: float = 30.0
    rate_burst: int = 100
    max_connections_per_user: int = 5
    max_connections_per_room: int = 50
    max_members: int = 10
    # Candidates per room; interviewers are not counted (a panel of several stays possible).
    max_candidates: int = 1
    # The document a new room starts with ("" for an empty editor).
    welcome_text: str = ""
    # Focus-loss incidents and suspicious key presses kept per room (each; the newest), besides counts.
    monitoring_max_records: int = 500
    create_limit: int = 20
    join_failure_limit: int = 20
    token_expiry_warning: int = 60
    # Seconds a socket may stay open past its token's expiry, for frontends that cannot send
    # refresh_token (0: closed with 4401 at expiry). Removal and room close still end it at once.
    token_grace: int = 0
    send_queue_frames: int = 256
    max_frame_bytes: int = 256 * 1024
    max_document_bytes: int = 200 * 1024
    shutdown_grace: float = 20.0

    # Admission control (admission.py): frames are shed in the proportion that holds this replica's
    # measured queueing (event-loop lag, the Redis script queue's head wait) near shed_frames_ms; new
    # sockets are refused while it is at least shed_sockets_ms.
    shed_sockets_ms: float = 100.0
    shed_frames_ms: float = 100.0
    shed_retry_after: float = 2.0

    @property
    def is_embedded(self) -> bool:
        """True when there is no REDIS_URL: one process, with an in-process store."""
        return self.redis_url is None

    @property
    def redis_cluster(self) -> bool:
        """True for a redis+cluster:// (or rediss+cluster://) REDIS_URL: Redis Cluster mode."""
        return self.redis_url is not None and url_scheme(self.redis_url) in CLUSTER_SCHEMES

    @property
    def redis_sentinel(self) -> bool:
        """True for a redis+sentinel:// (or rediss+sentinel://) REDIS_URL: the primary found by Sentinel."""
        return self.redis_url is not None and url_scheme(self.redis_url) in SENTINEL_SCHEMES

    @property
    def jwks_url(self) -> str | None:
        if self.supabase_url is None:
            return None
        return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"

    @property
    def jwt_issuer(self) -> str | None:
        if self.supabase_url is None:
            return None
        return f"{self.supabase_url}/auth/v1"

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
    ) -> Settings:
        """Settings from `environ` (default: os.environ) over the values of `env_file` (default: ./.env).

        Real environment variables win over the file, as with every dotenv convention.
        """
        values: dict[str, str] = {}
        path = Path(env_file) if env_file is not None else Path(".env")
        if env_file is not None or (environ is None and path.is_file()):
            values.update(read_env_file(path))
        values.update(os.environ if environ is None else environ)
        return cls._from_values(values)

    @classmethod
    def _from_values(cls, env: Mapping[str, str]) -> Settings:
        reader = _Reader(env)
        dev_mode = reader.boolean("RELAY_DEV_MODE", False)
        supabase_url = reader.url("SUPABASE_URL")
        jwt_secret = reader.text("SUPABASE_JWT_SECRET")
        if dev_mode and jwt_secret is None and supabase_url is None:
            jwt_secret = DEV_JWT_SECRET
        claim_text = reader.text("RELAY_INTERVIEWER_CLAIM") or (DEV_INTERVIEWER_CLAIM if dev_mode else None)
        settings = cls(
            host=reader.text("HOST") or cls.host,
            port=reader.integer("PORT", cls.port, minimum=1, maximum=65535),
            workers=reader.integer("RELAY_WORKERS", cls.workers, minimum=1, maximum=64),
            log_level=reader.choice("RELAY_LOG_LEVEL", cls.log_level, _LOG_LEVELS),
            log_format=reader.choice("RELAY_LOG_FORMAT", cls.log_format, {"json", "text", "auto"}),
            dev_mode=dev_mode,
            supabase_url=supabase_url,
            supabase_anon_key=reader.text("SUPABASE_ANON_KEY"),
            jwt_secret=jwt_secret,
            jwt_audience=reader.text("RELAY_JWT_AUDIENCE") or cls.jwt_audience,
            jwks_min_refresh_seconds=reader.number(
                "RELAY_JWKS_MIN_REFRESH", cls.jwks_min_refresh_seconds, minimum=0
            ),
            interviewer_claim=InterviewerClaim.parse(claim_text) if claim_text else None,
            create_requires_interviewer=reader.boolean("RELAY_CREATE_REQUIRES_INTERVIEWER", False),
            allowed_origins=reader.origins("RELAY_ALLOWED_ORIGINS"),
            serve_page=reader.boolean("RELAY_SERVE_PAGE", dev_mode),
            redis_url=reader.redis_url("REDIS_URL"),
            room_ttl=reader.integer("RELAY_ROOM_TTL", cls.room_ttl, minimum=60),
            closed_room_ttl=reader.integer("RELAY_CLOSED_ROOM_TTL", cls.closed_room_ttl, minimum=1),
            history_max_events=reader.integer("RELAY_HISTORY_MAX_EVENTS", cls.history_max_events, minimum=1),
            history_max_age=reader.integer("RELAY_HISTORY_MAX_AGE", cls.history_max_age, minimum=1),
            presence_ttl=reader.integer("RELAY_PRESENCE_TTL", cls.presence_ttl, minimum=3),
            redis_link_timeout=reader.number("RELAY_REDIS_LINK_TIMEOUT", cls.redis_link_timeout, minimum=1),
            redis_wait_replicas=reader.integer(
                "RELAY_REDIS_WAIT_REPLICAS", cls.redis_wait_replicas, minimum=0, maximum=16
            ),
            redis_wait_timeout_ms=reader.integer(
                "RELAY_REDIS_WAIT_TIMEOUT_MS", cls.redis_wait_timeout_ms, minimum=1, maximum=60_000
            ),
            yjs_compact_after=reader.integer("RELAY_YJS_COMPACT_AFTER", cls.yjs_compact_after, minimum=1),
            yjs_compact_keep=reader.integer("RELAY_YJS_COMPACT_KEEP", cls.yjs_compact_keep, minimum=0),
            yjs_text_delay=reader.number("RELAY_YJS_TEXT_DELAY", cls.yjs_text_delay, minimum=0),
            whole_document_merge=reader.choice(
                "RELAY_WHOLE_DOCUMENT_MERGE", cls.whole_document_merge, {"yjs", "always"}
            ),
            rate_per_second=reader.number("RELAY_RATE_PER_SECOND", cls.rate_per_second, minimum=0.1),
            rate_burst=reader.integer("RELAY_RATE_BURST", cls.rate_burst, minimum=1),
            max_connections_per_user=reader.integer(
                "RELAY_MAX_CONNECTIONS_PER_USER", cls.max_connections_per_user, minimum=1
            ),
            max_connections_per_room=reader.integer(
                "RELAY_MAX_CONNECTIONS_PER_ROOM", cls.max_connections_per_room, minimum=1
            ),
            max_members=reader.integer("RELAY_MAX_MEMBERS", cls.max_members, minimum=2),
            max_candidates=reader.integer("RELAY_MAX_CANDIDATES", cls.max_candidates, minimum=1),
            welcome_text=reader.multiline("RELAY_WELCOME_TEXT"),
            monitoring_max_records=reader.integer(
                "RELAY_MONITORING_MAX_RECORDS", cls.monitoring_max_records, minimum=1, maximum=100_000
            ),
            create_limit=reader.integer("RELAY_CREATE_LIMIT", cls.create_limit, minimum=1),
            join_failure_limit=reader.integer("RELAY_JOIN_FAILURE_LIMIT", cls.join_failure_limit, minimum=1),
            token_expiry_warning=reader.integer(
                "RELAY_TOKEN_EXPIRY_WARNING", cls.token_expiry_warning, minimum=0
            ),
            token_grace=reader.integer(
                "RELAY_TOKEN_GRACE", cls.token_grace, minimum=0, maximum=MAX_TOKEN_GRACE_SECONDS
            ),
            send_queue_frames=reader.integer("RELAY_SEND_QUEUE", cls.send_queue_frames, minimum=1),
            max_frame_bytes=reader.integer("RELAY_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=1024),
            max_document_bytes=reader.integer("RELAY_MAX_DOCUMENT_BYTES", cls.max_document_bytes, minimum=1),
            shutdown_grace=reader.number("RELAY_SHUTDOWN_GRACE", cls.shutdown_grace, minimum=0),
            shed_sockets_ms=reader.number(
                "RELAY_SHED_SOCKETS_MS", cls.shed_sockets_ms, minimum=0, unit="milliseconds"
            ),
            shed_frames_ms=reader.number(
                "RELAY_SHED_FRAMES_MS", cls.shed_frames_ms, minimum=0, unit="milliseconds"
            ),
            shed_retry_after=reader.number("RELAY_SHED_RETRY_AFTER", cls.shed_retry_after, minimum=1),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that would start a service nobody can use safely."""
        if not self.dev_mode and self.jwt_secret is None and self.supabase_url is None:
            raise ConfigError(
                "no Supabase settings: set SUPABASE_URL (ES256/RS256 via JWKS) and/or "
                "SUPABASE_JWT_SECRET (HS256), or RELAY_DEV_MODE=true to try relay with local tokens"
            )
        if not self.dev_mode and self.jwt_secret == DEV_JWT_SECRET:
            raise ConfigError(
                "SUPABASE_JWT_SECRET is the public development secret; set your project's JWT secret "
                "or RELAY_DEV_MODE=true"
            )
        if (
            not self.dev_mode
            and self.jwt_secret is not None
            and len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES
        ):
            raise ConfigError(
                f"SUPABASE_JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes, "
                f"got {len(self.jwt_secret.encode())}"
            )
        if self.is_embedded and self.workers > 1:
            raise ConfigError(
                f"RELAY_WORKERS={self.workers} needs REDIS_URL: the embedded store lives in one process"
            )
        if self.max_document_bytes >= self.max_frame_bytes:
            raise ConfigError(
                f"RELAY_MAX_DOCUMENT_BYTES ({self.max_document_bytes}) must be smaller than "
                f"RELAY_MAX_FRAME_BYTES ({self.max_frame_bytes}): an editor_update carries the document"
            )
        try:
            welcome_bytes = len(self.welcome_text.encode())
        except UnicodeEncodeError:
            raise ConfigError("RELAY_WELCOME_TEXT must be valid UTF-8 text") from None
        if welcome_bytes > self.max_document_bytes:
            raise ConfigError(
                f"RELAY_WELCOME_TEXT is {welcome_bytes} bytes; it becomes the document of every new room, "
                f"which may hold at most RELAY_MAX_DOCUMENT_BYTES ({self.max_document_bytes})"
            )
        if self.create_requires_interviewer and self.interviewer_claim is None:
            raise ConfigError(
                "RELAY_CREATE_REQUIRES_INTERVIEWER=true needs RELAY_INTERVIEWER_CLAIM "
                "(e.g. app_metadata.role=interviewer)"
            )


# The environment names relay reads (and uvicorn's FORWARDED_ALLOW_IPS, which README documents): all an
# env file may hand on to the worker processes. Anything else in the file (other services' secrets)
# stays out of the process environment.
_OWN_PREFIXES = ("RELAY_", "SUPABASE_")
_OWN_NAMES = frozenset({"HOST", "PORT", "REDIS_URL", "FORWARDED_ALLOW_IPS"})


def own_settings(values: Mapping[str, str]) -> dict[str, str]:
    """The entries of `values` that are relay's settings."""
    return {
        name: value for name, value in values.items() if name.startswith(_OWN_PREFIXES) or name in _OWN_NAMES
    }


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file, parsed by Starlette's reader (`#` comments, quoted values)."""
    if not path.is_file():
        raise ConfigError(f"env file {str(path)!r} does not exist")
    return dict(starlette.config.Config(env_file=path, environ={}).file_values)


class _Reader:
    """Typed access to raw strings, each failure naming the setting and the value that arrived."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def multiline(self, name: str) -> str:
        """Text kept as written (no stripping), with `\\n` read as a line break: env files hold one line."""
        value = self._env.get(name)
        if value is None:
            return ""
        return value.replace("\\n", "\n")

    def boolean(self, name: str, default: bool) -> bool:
        value = self._env.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def integer(
        self,
        name: str,
        default: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._env.get(name)
        if value is None or not value.strip():
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{name} must be {bounds}, got {number}")
        return number

    def number(self, name: str, default: float, *, minimum: float, unit: str = "seconds") -> float:
        value = self._env.get(name)
        if value is None or not value.strip():
            return default
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number of {unit}, got {value!r}") from None
        if math.isnan(number) or number < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
        return number

    def choice(self, name: str, default: str, choices: set[str]) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(sorted(choices))}, got {value!r}")
        return value.lower()

    def url(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(f"{name} must be an http(s) URL like https://<ref>.supabase.co, got {value!r}")
        return value.rstrip("/")

    def redis_url(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        scheme = url_scheme(value)
        if scheme in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
            try:
                MultiNodeURL.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        elif scheme not in {"redis", "rediss", "unix"}:
            # Only the scheme is echoed: the rest of the URL may hold a password.
            raise ConfigError(
                f"{name} must be a redis://, rediss://, unix://, redis+cluster://host:port,host:port or "
                f"redis+sentinel://host:port,host:port/service URL, got a {scheme or 'schemeless'!r} URL"
            )
        return value

    def origins(self, name: str) -> tuple[str, ...]:
        value = self.text(name)
        if value is None:
            return ()
        origins = []
        for item in value.split(","):
            origin = item.strip().rstrip("/")
            if not origin:
                continue
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in {"http", "https"} or not parts.netloc or parts.path):
                raise ConfigError(
                    f"{name} must be a comma-separated list of origins like https://app.example.com, "
                    f"got {origin!r}"
                )
            origins.append(origin)
        return tuple(origins)
