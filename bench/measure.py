"""Server CPU and memory from /proc, for the servers' pids and all their descendants (uvicorn workers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    """root and all its descendants (uvicorn --workers, `relay serve --workers`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU of the processes and their live descendants (and reaped children)."""
    ticks = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime stime cutime cstime: fields 14-17 of stat(5); index 11.. after the state field.
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), to show what else ran during a measurement."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def rss_bytes(roots: Sequence[int]) -> int:
    total = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
            except OSError:
                continue
    return total
