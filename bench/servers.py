"""The servers that `relay bench --start` and `--compare-baseline` run: redis-server, relay, baseline."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench.processes import RedisServer, ServerProcess, free_port, stop_all

# The directory holding the bench package: the baseline replicas import this very bench.baseline,
# whatever the working directory.
BENCH_ROOT = Path(__file__).resolve().parent.parent


class Servers:
    """One redis-server and the replicas started on free ports; stopped by pid on exit."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.redis: RedisServer | None = None
        self.replicas: list[ServerProcess] = []

    def start_redis(self) -> None:
        self.redis = RedisServer(binary=self.args.redis_server, log_path=self.log_dir / "redis.log")
        self.redis.start()

    def start(self, kind: str, count: int) -> list[ServerProcess]:
        assert self.redis is not None, "start_redis() first"
        started = []
        for i in range(count):
            port = free_port()
            env = dict(os.environ, REDIS_URL=self.redis.url)
            if kind == "baseline":
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_ROOT), env.get("PYTHONPATH")]))
                argv = [
                    sys.executable, "-m", "uvicorn", "bench.baseline:app",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--no-access-log",
                    "--ws", self.args.ws,
                    "--loop", self.args.loop,
                    "--http", self.args.http,
                ]  # fmt: skip
                if not self.args.ws_per_message_deflate:
                    argv.append("--ws-per-message-deflate=false")
            else:
                env["RELAY_DEV_MODE"] = "true"
                # The workload decides the room size; relay's default member limit (10) must not.
                env.setdefault("RELAY_MAX_MEMBERS", str(max(10, self.args.members)))
                # Every member but the room's creator joins as a candidate.
                env.setdefault("RELAY_MAX_CANDIDATES", str(max(1, self.args.members - 1)))
                env.update(item.split("=", 1) for item in self.args.relay_env)
                argv = [
                    *shlex.split(self.args.relay_cmd),
                    "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                ]  # fmt: skip
            replica = ServerProcess(
                f"{kind} replica {i} ({' '.join(argv)})",
                argv,
                port=port,
                env=env,
                log_path=self.log_dir / f"{kind}-{i}.log",
            )
            self.replicas.append(replica)
            started.append(replica.start())
        return started

    def stop(self) -> None:
        # Replicas first, so that their shutdown can still talk to Redis; then Redis.
        stop_all(self.replicas)
        if self.redis is not None:
            self.redis.cleanup()
