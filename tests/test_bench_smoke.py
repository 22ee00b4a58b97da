"""Smoke tests of `relay bench` (the top-level bench package): tiny workloads over real replicas.

The bench starts everything itself (one redis-server, two relay and two baseline replicas on free ports,
all stopped by pid), so these tests also prove its --compare-baseline mode. They assert what must always
hold (every event delivered once and in order, every connection opened) and never a timing figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import cli


def run_bench(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    """`relay bench ... --compare-baseline`, through relay's own command line."""
    report = tmp_path / "bench.json"
    code = cli.main(
        ["bench", *argv, "--compare-baseline", "--replicas", "2", "--json", str(report), "--quiet"]
    )
    assert report.exists(), f"relay bench exited {code} without a report"
    return code, json.loads(report.read_text())


@pytest.mark.slow
def test_tiny_workload_is_delivered_once_and_in_order_by_relay_and_baseline(tmp_path: Path) -> None:
    """2 rooms x 2 members x 5 ev/s for 2 s across two replicas: nothing lost, doubled or reordered."""
    code, report = run_bench(
        tmp_path,
        "--rooms", "2", "--members", "2", "--rate", "5",
        "--duration", "2", "--warmup", "1", "--drain", "15",
    )  # fmt: skip
    assert [run["target"] for run in report["runs"]] == ["relay", "baseline"]
    for run in report["runs"]:
        assert run["connections"] == 4, run
        assert run["connect_failures"] == 0, run
        assert run["expected"] > 0, run
        assert run["delivered"] == run["expected"], run
        assert (run["lost"], run["duplicated"], run["out_of_order"]) == (0, 0, 0), run
        assert (run["malformed"], run["errors"], run["closed_early"]) == (0, 0, 0), run
        assert run["server_cpu_us_per_msg"] is not None, run
    relay_run = report["runs"][0]
    # relay acknowledges each editor_update to its sender; the baseline does not.
    assert relay_run["acks"] > 0
    assert report["ratios"]["server_cpu_us_per_msg"] is not None
    assert code == 0


@pytest.mark.slow
def test_idle_mode_opens_every_connection_and_reports_memory(tmp_path: Path) -> None:
    """--idle 10 opens 10 sockets on each server and reports server memory per connection."""
    code, report = run_bench(tmp_path, "--idle", "10", "--settle", "0.5")
    for run in report["runs"]:
        assert run["connections"] == 10, run
        assert run["connect_failures"] == 0, run
        assert run["server_kb_per_connection"] is not None, run
    assert code == 0


def test_relay_bench_without_the_bench_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where bench is not installed (the container image), `relay bench` exits 2 and names the command."""
    monkeypatch.setitem(sys.modules, "bench.cli", None)  # what an install without bench/ looks like
    assert cli.main(["bench", "--compare-baseline", "--rooms", "1"]) == 2
    assert "pip install -e '.[bench]'" in capsys.readouterr().err
