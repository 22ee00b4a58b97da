"""A real Redis Cluster for tests (three primaries with one replica each, as six local processes), and
the client helpers the failover tests share.

Every node is a `redis-server --cluster-enabled yes` on a free port in a temporary directory, joined by
`redis-cli --cluster create --cluster-replicas 1`, and stopped by its pid. A low cluster-node-timeout
keeps failovers to about a second. Nothing here touches a Redis the test did not start.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.crc import key_slot

from bench.processes import START_TIMEOUT, free_port, wait_for
from tests.support import Client

NODE_TIMEOUT_MS = 1000


def cli(port: int, *args: str, timeout: float = 10) -> str:
    """One redis-cli command against a local node; its output, stripped."""
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout.strip()


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


@dataclass
class ClusterNode:
    port: int
    bus_port: int  # chosen, not port + 10000: a free port above 55535 would have no bus port
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, binary: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # What README recommends for relay: a shard without a primary stops its own slots only.
            "--cluster-require-full-coverage",
            "no",
            # A replica takes over however long it was cut off: the test kills primaries on purpose.
            "--cluster-replica-validity-factor",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, START_TIMEOUT, f"cluster node on port {self.port}")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.dir}/log")
        try:
            return cli(self.port, "PING", timeout=2) == "PONG"
        except (subprocess.SubprocessError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@dataclass
class LocalCluster:
    """Six nodes: `primaries` and `replicas` are read from the cluster itself, so they follow failovers."""

    size: int = 6
    replicas_per_primary: int = 1
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relay-cluster-")))
    nodes: list[ClusterNode] = field(default_factory=list)

    def start(self) -> LocalCluster:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); see README")
        try:
            for index in range(self.size):
                port = free_port()
                node = ClusterNode(port, free_port(), self.dir / f"node{index}-{port}")
                node.start(binary)
                self.nodes.append(node)
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(node.address for node in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas_per_primary),
                    "--cluster-yes",
                ],
                capture_output=True,
                check=True,
                timeout=60,
            )
            for node in self.nodes:
                node.node_id = cli(node.port, "CLUSTER", "MYID")
            self.wait_healthy()
        except BaseException:
            self.cleanup()
            raise
        return self

    @property
    def url(self) -> str:
        """REDIS_URL for relay: the cluster scheme with every node as a seed."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def _any_running(self) -> ClusterNode:
        return next(node for node in self.nodes if node.is_running)

    def slot_owners(self) -> dict[int, int]:
        """slot -> port of the primary that serves it, as a running node sees it."""
        owners: dict[int, int] = {}
        for line in cli(self._any_running().port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for spec in fields[8:]:
                if spec.startswith("["):
                    continue  # a slot in migration
                low, _, high = spec.partition("-")
                for slot in range(int(low), int(high or low) + 1):
                    owners[slot] = port
        return owners

    def primary_of(self, key: str) -> ClusterNode:
        return self.node(self.slot_owners()[slot_of(key)])

    def primaries(self) -> list[ClusterNode]:
        return [self.node(port) for port in sorted(set(self.slot_owners().values()))]

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        for node in self.nodes:
            if node.is_running and node is not primary:
                info = cli(node.port, "INFO", "replication")
                if "role:slave" in info and f"master_port:{primary.port}" in info:
                    return node
        raise LookupError(f"no running replica of {primary.address}")

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every running node says cluster_state:ok, every replica is in sync with its primary, and all
        16384 slots are served."""

        def healthy() -> bool:
            for node in self.nodes:
                if not node.is_running:
                    continue
                if "cluster_state:ok" not in cli(node.port, "CLUSTER", "INFO"):
                    return False
                replication = cli(node.port, "INFO", "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False  # still syncing: WAIT would not count it yet
            return len(self.slot_owners()) == 16384

        wait_for(healthy, timeout, "the cluster to be healthy")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no shutdown, no last words to its replica."""
        node.stop(signal.SIGKILL)

    def wait_failover(self, dead: ClusterNode, timeout: float = 30) -> ClusterNode:
        """Waits until another node serves the dead primary's slots; returns that node."""
        slots = [slot for slot, port in self.slot_owners().items() if port == dead.port]
        assert slots, f"{dead.address} served no slots"

        def promoted() -> bool:
            owner = self.slot_owners().get(slots[0])
            return owner is not None and owner != dead.port

        wait_for(promoted, timeout, f"a replica of {dead.address} to take over")
        self.wait_healthy(timeout)
        return self.node(self.slot_owners()[slots[0]])

    def restart(self, node: ClusterNode) -> None:
        """Starts a stopped node again with its nodes.conf: it rejoins (as a replica after a failover)."""
        binary = shutil.which("redis-server")
        assert binary is not None
        node.start(binary)

    def migrate_slot(self, slot: int, target: ClusterNode, *, on_moved: bool = True) -> None:
        """Moves one slot and its keys to `target` with the same steps `redis-cli --cluster reshard` takes."""
        source = self.node(self.slot_owners()[slot])
        assert source is not target
        cli(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source.node_id)
        cli(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target.node_id)
        while True:
            keys = cli(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                break
            cli(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
        for node in (target, source, *(p for p in self.primaries() if p not in (target, source))):
            cli(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", target.node_id)

        def agreed() -> bool:
            return all(
                f"{slot}" in _own_slots(cli(node.port, "CLUSTER", "NODES"), target.node_id)
                for node in self.nodes
                if node.is_running
            )

        wait_for(agreed, 30, f"every node to agree that slot {slot} moved")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _own_slots(nodes_output: str, node_id: str) -> set[str]:
    for line in nodes_output.splitlines():
        fields = line.split()
        if fields and fields[0] == node_id:
            slots: set[str] = set()
            for spec in fields[8:]:
                if spec.startswith("["):
                    continue
                low, _, high = spec.partition("-")
                slots.update(str(s) for s in range(int(low), int(high or low) + 1))
            return slots
    return set()


def edit_until_acked(client: Client, content: str, msg_id: str, timeout: float = 30) -> int:
    """Sends an edit and resends it (same client_msg_id) after each `unavailable` until it is acked."""
    deadline = time.monotonic() + timeout
    client.send({"type": "editor_update", "content": content, "client_msg_id": msg_id})
    while True:
        frame = client.recv_until(
            lambda f: f.get("client_msg_id") == msg_id and f.get("type") in ("ack", "error"),
            timeout=max(0.1, deadline - time.monotonic()),
        )
        if frame["type"] == "ack":
            return int(frame["seq"])
        assert frame["code"] == "unavailable", frame
        time.sleep(0.2)
        client.send({"type": "editor_update", "content": content, "client_msg_id": msg_id})


def delivered_edits(client: Client, until_seq: int, timeout: float = 20) -> dict[int, str]:
    """seq -> content of every editor_update the client received, once it has seen `until_seq`."""
    if not any(f.get("type") == "editor_update" and f["seq"] >= until_seq for f in client.frames):
        client.recv_until(lambda f: f.get("type") == "editor_update" and f["seq"] >= until_seq, timeout)
    seqs = [f["seq"] for f in client.frames if f.get("type") == "editor_update"]
    assert seqs == sorted(set(seqs)), f"edits out of order or twice: {seqs}"
    return {f["seq"]: f["content"] for f in client.frames if f.get("type") == "editor_update"}
