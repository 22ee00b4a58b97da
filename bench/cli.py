"""`relay bench` (or `python -m bench`): the command line, and the servers it starts for a run.

Server CPU and memory are read from /proc for the pids given with ``--server-pid`` (their child
processes included, e.g. uvicorn workers) or for the servers the command starts itself with ``--start``
or ``--compare-baseline``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.report import Progress, ratios, render_table
from bench.runner import run_workload
from bench.servers import Servers
from bench.workload import Workload
from relay.config import DEV_JWT_SECRET


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load-test relay replicas: R rooms x K members spread over the URLs given, each member sending F "
        "events/s; reports delivered/s, lost, duplicated, out of order, latency percentiles and (with server "
        "pids, or servers it starts) server CPU per delivered message and memory."
    )
    parser.add_argument(
        "urls", nargs="*", metavar="URL", help="replica base URLs, e.g. http://127.0.0.1:8000"
    )
    load = parser.add_argument_group("workload")
    load.add_argument("--rooms", "-R", type=int, default=200, help="rooms (default 200)")
    load.add_argument("--members", "-K", type=int, default=2, help="members per room (default 2)")
    load.add_argument("--rate", "-F", type=float, default=5.0, help="events/s per member (default 5)")
    load.add_argument("--payload", "-P", type=int, default=200, help="editor content bytes (default 200)")
    load.add_argument("--duration", "-D", type=float, default=20.0, help="measured seconds (default 20)")
    load.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    load.add_argument("--drain", type=float, default=5.0, help="max seconds to wait for stragglers (5)")
    load.add_argument(
        "--editor-ratio", type=float, default=0.3, help="share of editor_update, rest cursor_update (0.3)"
    )
    load.add_argument("--idle", type=int, default=0, metavar="N", help="idle mode: open N connections")
    load.add_argument("--settle", type=float, default=3.0, help="idle mode: seconds before measuring (3)")
    load.add_argument(
        "--client-deflate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="clients offer permessage-deflate as browsers do (default off: the generator's CPU is scarce)",
    )
    load.add_argument("--origin", default=None, help="Origin header for the WebSocket handshake")
    load.add_argument("--seed", type=int, default=1)
    load.add_argument("--procs", type=int, default=1, help="load generator processes (default 1)")
    load.add_argument(
        "--jwt-secret",
        default=os.environ.get("RELAY_BENCH_JWT_SECRET", DEV_JWT_SECRET),
        help="HS256 secret for the members' tokens (default: relay's dev secret; needs RELAY_DEV_MODE=true)",
    )
    measure = parser.add_argument_group("servers")
    measure.add_argument(
        "--server-pid", type=int, action="append", default=[], help="server pid to measure (repeatable)"
    )
    measure.add_argument(
        "--redis-pid",
        type=int,
        action="append",
        default=[],
        help="redis-server pid to measure (repeatable: every node of a Redis Cluster)",
    )
    measure.add_argument(
        "--start",
        choices=("baseline", "relay"),
        default=None,
        help="start one redis-server and --replicas replicas of this server on free ports, and target them",
    )
    measure.add_argument(
        "--compare-baseline",
        action="store_true",
        help="start relay and baseline replicas (one shared redis-server) and run the workload on each",
    )
    measure.add_argument("--replicas", type=int, default=2, help="replicas to start (default 2)")
    measure.add_argument(
        "--relay-cmd",
        default=f"{shlex.quote(sys.executable)} -m relay.cli",
        help="command that runs relay's CLI (default: this Python, -m relay.cli)",
    )
    measure.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "environment for started relay replicas (repeatable); "
            "RELAY_MAX_MEMBERS and RELAY_MAX_CANDIDATES follow --members"
        ),
    )
    measure.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    measure.add_argument(
        "--log-dir", type=Path, default=None, help="keep the started servers' logs here (default: discarded)"
    )
    measure.add_argument(
        "--ws", default="auto", help="uvicorn --ws for started baseline replicas (auto = websockets-sansio)"
    )
    measure.add_argument(
        "--ws-per-message-deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="uvicorn --ws-per-message-deflate for started baseline replicas",
    )
    measure.add_argument("--loop", default="auto", help="uvicorn --loop for started baseline replicas")
    measure.add_argument("--http", default="auto", help="uvicorn --http for started baseline replicas")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table", help="stdout format")
    output.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write JSON here")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")


def workload_from(args: argparse.Namespace) -> Workload:
    if args.members < 1 or (args.rooms < 1 and not args.idle):
        raise ValueError(f"--rooms and --members must be positive, got {args.rooms} and {args.members}")
    if args.rate <= 0 or args.duration <= 0:
        raise ValueError(f"--rate and --duration must be positive, got {args.rate} and {args.duration}")
    if any("=" not in item for item in args.relay_env):
        raise ValueError(f"--relay-env takes KEY=VALUE, got {args.relay_env}")
    if not 0 <= args.editor_ratio <= 1:
        raise ValueError(f"--editor-ratio must be between 0 and 1, got {args.editor_ratio}")
    return Workload(
        rooms=args.rooms,
        members=args.members,
        rate=args.rate,
        payload=args.payload,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        editor_ratio=args.editor_ratio,
        idle=args.idle,
        client_deflate=args.client_deflate,
        origin=args.origin,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """`relay bench`: 0 when every run delivered everything, 1 when any lost, duplicated or reordered."""
    try:
        load = workload_from(args)
    except ValueError as exc:
        print(f"relay bench: {exc}", file=sys.stderr)
        return 2
    if not args.urls and not args.start and not args.compare_baseline:
        print(
            "relay bench: give replica URLs, --start baseline|relay, or --compare-baseline", file=sys.stderr
        )
        return 2
    progress = Progress(sys.stderr, not args.quiet)
    runs: list[dict[str, Any]] = []
    with _sigterm_as_exit():
        code = _run_and_report(args, load, runs, progress)
    return code


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers and generator processes started here are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_and_report(
    args: argparse.Namespace, load: Workload, runs: list[dict[str, Any]], progress: Progress
) -> int:
    with contextlib.ExitStack() as stack:
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.log_dir)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-"))
        try:
            with _servers(args, Path(tmp)) as servers:
                _run_all(args, load, servers, runs, progress)
        except (RuntimeError, TimeoutError) as exc:
            progress.done()
            print(f"relay bench: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace")[-2000:]
                if tail.strip() and tail.strip()[-200:] not in str(exc):
                    print(f"--- {log.name} (last lines)\n{tail}", file=sys.stderr)
            return 2
    report: dict[str, Any] = {
        "workload": load.describe(),
        "parameters": dataclasses.asdict(load) | {"replicas": args.replicas, "ws": args.ws},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": runs,
    }
    if len(runs) == 2:
        report["ratios"] = ratios(runs)
    encoded = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if args.json is not None:
        args.json.write_bytes(encoded + b"\n")
    if args.format == "json":
        print(encoded.decode())
    else:
        print(render_table(report))
    failed = any(
        r.get("lost") or r.get("duplicated") or r.get("out_of_order") or r.get("connect_failures")
        for r in runs
    )
    return 1 if failed else 0


def _run_all(
    args: argparse.Namespace,
    load: Workload,
    servers: Servers | None,
    runs: list[dict[str, Any]],
    progress: Progress,
) -> None:
    if servers is None:
        runs.append(
            run_workload(
                "target",
                args.urls,
                load,
                args,
                server_pids=args.server_pid,
                redis_pids=args.redis_pid,
                progress=progress,
            )
        )
        return
    kinds = ["relay", "baseline"] if args.compare_baseline else [args.start]
    groups = [servers.start(kind, args.replicas) for kind in kinds]
    redis_pids = [servers.redis.pid] if servers.redis and servers.redis.pid is not None else []
    for kind, group in zip(kinds, groups, strict=True):
        pids = [r.pid for r in group if r.pid is not None]
        urls = [f"http://127.0.0.1:{r.port}" for r in group]
        runs.append(
            run_workload(kind, urls, load, args, server_pids=pids, redis_pids=redis_pids, progress=progress)
        )


@contextlib.contextmanager
def _servers(args: argparse.Namespace, log_dir: Path) -> Iterator[Servers | None]:
    if not args.start and not args.compare_baseline:
        yield None
        return
    servers = Servers(args, log_dir)
    try:
        servers.start_redis()
        yield servers
    finally:
        servers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
