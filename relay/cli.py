"""`relay serve` runs the service; `relay token` mints a development token."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from relay.config import DEV_JWT_SECRET, ConfigError, Settings, own_settings, read_env_file


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the relay service (uvicorn)")
    serve.add_argument("--host", help="interface to bind (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (env PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (env RELAY_WORKERS, default 1)")
    serve.add_argument("--log-level", help="critical|error|warning|info|debug (env RELAY_LOG_LEVEL)")
    serve.add_argument("--dev", action="store_true", help="development mode (env RELAY_DEV_MODE=true)")
    serve.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")

    token = commands.add_parser("token", help="mint a development-mode token for a user")
    token.add_argument("--user", required=True, help="user id (the token's sub)")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--email", help="email claim")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument(
        "--interviewer",
        action="store_true",
        help="add the RELAY_INTERVIEWER_CLAIM claim (development default: app_metadata.role=interviewer)",
    )

    _add_bench(commands)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    return int(args.run(args))


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "load-test relay replicas (see README, Performance)"
    try:
        # The load generator is its own top-level package (bench/), not part of the product: it is there
        # after `pip install -e '.[bench]'` from a checkout, and never in the container image.
        bench_cli = importlib.import_module("bench.cli")
    except ImportError as error:
        # No option prefix: any `relay bench ...` line, --help included, gets the install hint.
        parser = commands.add_parser("bench", help=summary, prefix_chars="\0", add_help=False)
        parser.add_argument("ignored", nargs="*")
        parser.set_defaults(run=functools.partial(_bench_missing, str(error)))
        return
    parser = commands.add_parser("bench", help=summary)
    bench_cli.add_arguments(parser)
    parser.set_defaults(run=bench_cli.run)


def _bench_missing(error: str, args: argparse.Namespace) -> int:
    print(
        f"relay bench: the load generator is not installed ({error}).\n"
        "It ships with relay's source, not with the service: from a checkout of relay, run\n"
        "    pip install -e '.[bench]'\n"
        "then `relay bench --help` (see README, Performance).",
        file=sys.stderr,
    )
    return 2


def _serve(args: argparse.Namespace) -> int:
    # Flags become environment variables so that every uvicorn worker builds the same Settings.
    overrides = {
        "HOST": args.host,
        "PORT": None if args.port is None else str(args.port),
        "RELAY_WORKERS": None if args.workers is None else str(args.workers),
        "RELAY_LOG_LEVEL": args.log_level,
        "RELAY_DEV_MODE": "true" if args.dev else None,
    }
    flags = {key: value for key, value in overrides.items() if value is not None}
    try:
        # Validate once, with the flags applied: `relay serve --dev` on a machine with no settings at
        # all must start (the flags are what makes that configuration valid).
        file_values = own_settings(read_env_file(Path(args.env_file))) if args.env_file else {}
        settings = Settings.from_environ(
            {**file_values, **os.environ, **flags}, env_file=_default_env_file(args)
        )
    except ConfigError as error:
        print(f"relay: configuration error: {error}", file=sys.stderr)
        return 2
    # Workers re-read the environment: carry an explicit file's values and the flags over.
    for key, value in file_values.items():
        os.environ.setdefault(key, value)
    os.environ.update(flags)

    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker writes its metrics here and /metrics (answered by any one worker) adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")

    import uvicorn

    from relay.logs import log_config

    uvicorn.run(
        "relay.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings),
        log_level=settings.log_level,
        ws_max_size=settings.max_frame_bytes,
        # Frames are a few hundred bytes to a few KB: compression state would double the memory of every
        # connection that offers it (browsers do) for little gain (docs/performance.md).
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace) or None,
        proxy_headers=True,
    )
    return 0


def _default_env_file(args: argparse.Namespace) -> Path | None:
    """./.env when no --env-file was given and it exists (workers read it themselves, as this does)."""
    if args.env_file is None and Path(".env").is_file():
        return Path(".env")
    return None


def _token(args: argparse.Namespace) -> int:
    from relay.auth import mint_dev_token

    try:
        settings = Settings.from_environ({**os.environ, "RELAY_DEV_MODE": "true"})
    except ConfigError as error:
        print(f"relay: configuration error: {error}", file=sys.stderr)
        return 2
    secret = settings.jwt_secret or DEV_JWT_SECRET
    extra: dict[str, object] = {}
    if args.interviewer:
        claim = settings.interviewer_claim
        assert claim is not None  # development mode always has one (DEV_INTERVIEWER_CLAIM by default)
        extra = claim.as_claims()
    print(
        mint_dev_token(
            secret,
            args.user,
            name=args.name,
            email=args.email,
            ttl_seconds=args.ttl,
            extra_claims=extra,
            issuer=settings.jwt_issuer,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
