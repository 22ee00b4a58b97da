"""One measured run: set up the rooms, drive the generator processes, measure the servers meanwhile."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bench.generator import NS, WorkerResult, worker_entry
from bench.measure import cpu_seconds, machine_busy_seconds, rss_bytes
from bench.report import Progress, summarize
from bench.workload import RoomPlan, WorkerPlan, Workload, set_up_rooms

if TYPE_CHECKING:
    from multiprocessing.queues import Queue


def run_workload(
    label: str,
    urls: Sequence[str],
    load: Workload,
    args: argparse.Namespace,
    *,
    server_pids: Sequence[int],
    redis_pids: Sequence[int],
    progress: Progress,
) -> dict[str, Any]:
    """One measured run against the replicas at urls; returns the figures as a JSON-able dict."""
    progress.show(f"[{label}] setting up rooms over HTTP ...")
    plans = asyncio.run(set_up_rooms(urls, load, args.jwt_secret))
    procs = max(1, min(args.procs, len(plans)))
    shares: list[list[RoomPlan]] = [[] for _ in range(procs)]
    for i, room in enumerate(plans):
        shares[i % procs].append(room)
    connections = sum(len(r.members) for r in plans)

    rss_before = rss_bytes(server_pids) if server_pids else 0
    context = multiprocessing.get_context("spawn")
    out: Queue[Any] = context.Queue()
    controls: list[Queue[Any]] = [context.Queue() for _ in range(procs)]
    workers = [
        context.Process(
            target=worker_entry,
            args=(WorkerPlan(i, tuple(shares[i]), load), controls[i], out),
            name=f"relay-bench-{i}",
            daemon=True,
        )
        for i in range(procs)
    ]
    for process in workers:
        process.start()
    results: dict[int, WorkerResult] = {}
    sent_by: dict[int, int] = {}
    got_by: dict[int, int] = {}

    def pump(until: float, status: Callable[[], str], done: Callable[[], bool] = lambda: False) -> None:
        """Handle worker messages until `until` (time.time()) or done(), showing progress."""
        while not done():
            remaining = until - time.time()
            if remaining <= 0:
                return
            try:
                message = out.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                if any(not p.is_alive() and i not in results for i, p in enumerate(workers)):
                    raise RuntimeError("a load generator process died; see its traceback above") from None
                progress.show(status())
                continue
            kind, index = message[0], message[1]
            if kind == "ready":
                ready[index] = (message[2], message[3])
            elif kind == "progress":
                sent_by[index], got_by[index] = message[2], message[3]
            elif kind == "result":
                results[index] = message[2]
            progress.show(status())

    ready: dict[int, tuple[int, int]] = {}
    try:
        start = time.time()
        connect_deadline = start + 60 + connections / 50
        pump(
            connect_deadline,
            lambda: (
                f"[{label}] connecting: {sum(r[0] for r in ready.values())}/{connections} "
                f"({len(ready)}/{procs} generator processes ready)"
            ),
            lambda: len(ready) == procs,
        )
        if len(ready) < procs:
            raise RuntimeError(f"generator processes did not connect within {connect_deadline - start:.0f} s")
        figures: dict[str, Any]
        if load.is_idle:
            settle_until = time.time() + args.settle
            pump(settle_until, lambda: f"[{label}] {connections} idle connections open; settling ...")
            rss_after = rss_bytes(server_pids) if server_pids else 0
            cpu0 = cpu_seconds(server_pids) if server_pids else 0.0
            idle_until = time.time() + 2.0
            pump(idle_until, lambda: f"[{label}] measuring idle CPU ...")
            idle_cpu = (cpu_seconds(server_pids) - cpu0) / 2.0 if server_pids else math.nan
            for control in controls:
                control.put(("idle",))
            pump(time.time() + 60, lambda: f"[{label}] closing ...", lambda: len(results) == procs)
            opened = sum(r.connections for r in results.values())
            figures = {
                "connections": opened,
                "connect_failures": sum(r.connect_failures for r in results.values()),
                "closed_early": sum(r.closed_early for r in results.values()),
                "server_rss_mb_before": rss_before / 2**20 if server_pids else None,
                "server_rss_mb": rss_after / 2**20 if server_pids else None,
                "server_kb_per_connection": ((rss_after - rss_before) / 1024 / opened)
                if server_pids and opened
                else None,
                "server_idle_cpu_percent": idle_cpu * 100 if server_pids else None,
            }
        else:
            start_ns = time.time_ns() + NS // 2
            measure_start = start_ns + int(load.warmup * NS)
            measure_end = measure_start + int(load.duration * NS)
            for control in controls:
                control.put(("load", start_ns, measure_start, measure_end))
            t0 = start_ns / NS

            def status() -> str:
                now = time.time()
                phase = (
                    "warm-up"
                    if now < measure_start / NS
                    else "measure"
                    if now < measure_end / NS
                    else "drain"
                )
                got = sum(got_by.values())
                return (
                    f"[{label}] {phase} {now - t0:5.1f}/{(measure_end - start_ns) / NS:.0f}s "
                    f"sent {sum(sent_by.values())} delivered {got}"
                )

            pump(measure_start / NS, status)
            cpu0 = cpu_seconds(server_pids) if server_pids else 0.0
            redis0 = cpu_seconds(redis_pids) if redis_pids else 0.0
            busy0 = machine_busy_seconds()
            pump(measure_end / NS, status)
            cpu1 = cpu_seconds(server_pids) if server_pids else 0.0
            redis1 = cpu_seconds(redis_pids) if redis_pids else 0.0
            busy1 = machine_busy_seconds()
            rss = rss_bytes(server_pids) if server_pids else 0
            pump(time.time() + load.drain + 60, status, lambda: len(results) == procs)
            if len(results) < procs:
                raise RuntimeError("generator processes did not report within the drain time + 60 s")
            figures = summarize(load, list(results.values()))
            figures["machine_cpu_percent"] = (busy1 - busy0) / load.duration * 100
            delivered = figures["delivered"]
            if server_pids:
                figures["server_cpu_percent"] = (cpu1 - cpu0) / load.duration * 100
                figures["server_cpu_us_per_msg"] = (cpu1 - cpu0) * 1e6 / delivered if delivered else None
                figures["server_rss_mb"] = rss / 2**20
            if redis_pids:
                figures["redis_cpu_percent"] = (redis1 - redis0) / load.duration * 100
                figures["redis_cpu_us_per_msg"] = (redis1 - redis0) * 1e6 / delivered if delivered else None
            # What the rest of the machine took meanwhile: a figure measured on a busy machine says so.
            ours = figures.get("server_cpu_percent", 0.0) + figures.get("redis_cpu_percent", 0.0)
            ours += sum(figures["generator_cpu_percent"])
            figures["other_cpu_percent"] = max(0.0, figures["machine_cpu_percent"] - ours)
    finally:
        # After a normal run the workers are closing their sockets; after an error or a signal they are
        # ended now, not left sending.
        finished = len(results) == procs
        for control in controls:
            with contextlib.suppress(Exception):
                control.put(("idle",))
        for process in workers:
            process.join(timeout=15 if finished else 0.5)
            if process.is_alive():
                process.kill()
                process.join()
        progress.done()
    return {
        "target": label,
        "urls": list(urls),
        "server_pids": list(server_pids),
        "generator_processes": procs,
        **figures,
    }
