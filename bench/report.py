"""From the generator processes' tallies to figures, and from figures to a table; the progress line."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from typing import Any, TextIO

from bench.generator import WorkerResult
from bench.workload import Workload


class Progress:
    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.is_tty = stream.isatty()
        self.last_line = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.is_tty:
            self._write("\r\x1b[K" + text)
        elif now - self.last_line >= 5.0:
            self._write(text + "\n")
            self.last_line = now

    def done(self) -> None:
        if self.is_tty:
            self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # a closed pipe must not abort the run and leave servers behind
            self.enabled = False


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


def summarize(load: Workload, results: list[WorkerResult]) -> dict[str, Any]:
    latencies: list[int] = sorted(itertools.chain.from_iterable(r.latencies_ns for r in results))
    lags: list[int] = sorted(itertools.chain.from_iterable(r.loop_lag_ns for r in results))
    total = {
        name: sum(getattr(r, name) for r in results)
        for name in (
            "connections",
            "connect_failures",
            "closed_early",
            "sent",
            "sent_measured",
            "expected",
            "delivered",
            "lost",
            "duplicated",
            "out_of_order",
            "out_of_order_same_type",
            "malformed",
            "acks",
            "errors",
            "refused_edits",
            "lost_unrefused_edits",
            "incomplete_at_end",
        )
    }
    target_sends = total["connections"] * load.rate * load.duration
    first_error = next((r.first_error_frame for r in results if r.first_error_frame), "")
    first_close = next((r.first_early_close for r in results if r.first_early_close), "")
    connect_error = next((r.connect_error for r in results if r.connect_error), "")
    ms = 1e6
    return {
        **total,
        "sent_per_s": total["sent_measured"] / load.duration,
        "send_rate_achieved": total["sent_measured"] / target_sends if target_sends else None,
        "delivered_per_s": total["delivered"] / load.duration,
        "latency_ms": {
            "p50": percentile(latencies, 0.50) / ms,
            "p90": percentile(latencies, 0.90) / ms,
            "p99": percentile(latencies, 0.99) / ms,
            "max": (latencies[-1] / ms) if latencies else math.nan,
            "mean": (sum(latencies) / len(latencies) / ms) if latencies else math.nan,
        },
        "generator_cpu_percent": [round(r.cpu_seconds / load.duration * 100, 1) for r in results],
        # The generator's own event-loop lag (all its processes' samples): the part of a latency that is
        # the generator reading late, not the server delivering late.
        "generator_lag_ms": {
            "p50": percentile(lags, 0.50) / ms,
            "p99": percentile(lags, 0.99) / ms,
            "max": (lags[-1] / ms) if lags else math.nan,
        },
        "first_error_frame": first_error or None,
        "first_early_close": first_close or None,
        "connect_error": connect_error or None,
    }


ROWS: tuple[tuple[str, str, str], ...] = (
    ("connections", "connections", "{:.0f}"),
    ("connect_failures", "connect failures", "{:.0f}"),
    ("sent_per_s", "sent/s", "{:.0f}"),
    ("delivered_per_s", "delivered/s", "{:.0f}"),
    ("expected", "expected deliveries", "{:.0f}"),
    ("delivered", "delivered", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
    ("refused_edits", "  edits refused (error frame)", "{:.0f}"),
    ("lost_unrefused_edits", "  edits lost, not refused", "{:.0f}"),
    ("duplicated", "duplicated", "{:.0f}"),
    ("out_of_order", "out of order", "{:.0f}"),
    ("out_of_order_same_type", "  of which within one type", "{:.0f}"),
    ("latency_ms.p50", "latency p50 ms", "{:.2f}"),
    ("latency_ms.p90", "latency p90 ms", "{:.2f}"),
    ("latency_ms.p99", "latency p99 ms", "{:.2f}"),
    ("latency_ms.max", "latency max ms", "{:.2f}"),
    ("server_cpu_us_per_msg", "server CPU us/delivered", "{:.1f}"),
    ("server_cpu_percent", "server CPU % (all replicas)", "{:.0f}"),
    ("redis_cpu_us_per_msg", "redis CPU us/delivered", "{:.1f}"),
    ("server_rss_mb", "server RSS MB (all replicas)", "{:.1f}"),
    ("server_rss_mb_before", "server RSS MB before", "{:.1f}"),
    ("server_kb_per_connection", "server KB/connection", "{:.1f}"),
    ("server_idle_cpu_percent", "server idle CPU %", "{:.1f}"),
    ("generator_cpu_percent", "generator CPU % (per process)", "{}"),
    ("generator_lag_ms.p50", "generator loop lag p50 ms", "{:.2f}"),
    ("generator_lag_ms.p99", "generator loop lag p99 ms", "{:.2f}"),
    ("generator_lag_ms.max", "generator loop lag max ms", "{:.2f}"),
    ("redis_cpu_percent", "redis CPU %", "{:.0f}"),
    ("machine_cpu_percent", "machine CPU % (all processes)", "{:.0f}"),
    ("other_cpu_percent", "  of which other processes", "{:.0f}"),
    ("acks", "acks", "{:.0f}"),
    ("errors", "error frames", "{:.0f}"),
    ("closed_early", "closed early", "{:.0f}"),
    ("malformed", "unparsable frames", "{:.0f}"),
)
RATIO_KEYS = (
    "delivered_per_s",
    "latency_ms.p50",
    "latency_ms.p99",
    "server_cpu_us_per_msg",
    "server_rss_mb",
    "server_kb_per_connection",
)


def lookup(figures: dict[str, Any], key: str) -> Any:
    value: Any = figures
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def ratios(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    relay_run, baseline_run = runs
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = lookup(relay_run, key), lookup(baseline_run, key)
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b and not math.isnan(b)
        out[key] = round(a / b, 3) if ok else None
    return out


def render_table(report: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = report["runs"]
    ratio = report.get("ratios")
    headers = ["", *(r["target"] for r in runs)] + (["relay/baseline"] if ratio else [])
    lines: list[list[str]] = []
    for key, title, fmt in ROWS:
        values = [lookup(r, key) for r in runs]
        if all(v is None for v in values):
            continue
        row = [title]
        for v in values:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                row.append("-")
            elif isinstance(v, list):
                row.append(" ".join(f"{x:g}" for x in v))
            else:
                row.append(fmt.format(v))
        if ratio:
            r = ratio.get(key)
            row.append(f"{r:.2f}x" if r is not None else "")
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines, strict=True)]
    text = [f"workload: {report['workload']}"]
    text.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    text.append("  ".join("-" * w for w in widths))
    for row in lines:
        text.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in runs:
        for key in ("first_error_frame", "first_early_close", "connect_error"):
            if r.get(key):
                text.append(f"{r['target']}: {key.replace('_', ' ')}: {r[key]}")
    return "\n".join(text)
