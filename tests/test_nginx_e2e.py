"""deploy/nginx/relay.conf in front of three relay replicas and a real redis-server, end to end.

The example config users copy is run as written (only addresses, listen port and log path replaced):
clients create, join and edit a room through nginx; one replica is stopped with SIGTERM and another
killed with SIGKILL mid-session; the clients reconnect through nginx, resume from their last sequence
number and carry on with the same document.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from bench.processes import ServerProcess
from tests.support import (
    REPO,
    Client,
    RedisServer,
    Replica,
    create_room,
    free_port,
    join_room,
    token,
    wait_for,
)

NGINX_EXAMPLE = REPO / "deploy" / "nginx" / "relay.conf"

pytestmark = pytest.mark.slow


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(
            "nginx is not installed: in CI, .ci/deploy-checks installs it (apt-get install nginx-light)"
        )
    pytest.skip("nginx is not installed (apt-get install nginx-light); CI runs this test")


def render_example(replica_ports: list[int], listen_port: int, access_log: Path) -> str:
    """The example config with its three upstream addresses, listen port and log path replaced."""
    text = NGINX_EXAMPLE.read_text()
    upstream = re.search(r"upstream\s+relay_replicas\s*\{(.*?)\}", text, flags=re.S)
    assert upstream, "deploy/nginx/relay.conf has no `upstream relay_replicas { ... }`"
    ports = iter(replica_ports)
    body, count = re.subn(
        r"^(\s*server\s+)\S+", lambda m: f"{m[1]}127.0.0.1:{next(ports)}", upstream[1], flags=re.M
    )
    assert count == len(replica_ports), f"the example's upstream lists {count} servers, expected 3"
    text = text[: upstream.start(1)] + body + text[upstream.end(1) :]
    text, count = re.subn(r"^(\s*)listen\s+80;", rf"\g<1>listen 127.0.0.1:{listen_port};", text, flags=re.M)
    assert count == 1
    text, count = re.subn(r"(access_log\s+)\S+(\s+relay_noquery;)", rf"\g<1>{access_log}\g<2>", text)
    assert count == 1
    return text


class Nginx(ServerProcess):
    """nginx in the foreground with the example config; started means /api/health answers through it."""

    def __init__(self, binary: str, prefix: Path, port: int) -> None:
        self.binary = binary
        self.prefix = prefix
        argv = [*self.args(), "-g", "daemon off;"]
        # nginx logs its errors to error.log itself (-e); its stdout and stderr go there too.
        super().__init__("nginx", argv, port=port, log_path=prefix / "error.log")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def args(self) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.prefix}/",
            "-e",
            str(self.prefix / "error.log"),
            "-c",
            str(self.prefix / "nginx.conf"),
        ]

    def write_config(self, replica_ports: list[int]) -> None:
        (self.prefix / "relay.conf").write_text(render_example(replica_ports, self.port, self.access_log))
        built = subprocess.run([self.binary, "-V"], capture_output=True, text=True).stderr
        # Temp paths inside the prefix, for the modules this build has (each is an error if absent).
        temp_paths = "".join(
            f"    {module}_temp_path {self.prefix / module};\n"
            for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            if module == "client_body" or f"--without-http_{module}_module" not in built
        )
        (self.prefix / "nginx.conf").write_text(
            f"worker_processes 1;\n"  # one worker: round robin is then strictly in turn
            f"pid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'} warn;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n{temp_paths}    include {self.prefix / 'relay.conf'};\n}}\n"
        )

    def start(self, timeout: float = 20) -> Self:
        check = subprocess.run([*self.args(), "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t rejected the example config:\n{check.stderr}"
        return super().start(timeout)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.http}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Cluster:
    front: Nginx
    replicas: list[Replica]

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.process is not None and r.process.poll() is None]

    def connections(self) -> dict[str, int]:
        """Open WebSockets per serving replica, asked of each directly (not through nginx).

        A replica that is draining (503) or no longer listening holds no socket a client could keep.
        """
        counts = {}
        for replica in self.alive():
            try:
                response = httpx.get(f"{replica.http}/api/ready", timeout=5)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                counts[replica.name] = int(response.json()["connections"])
        return counts


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    binary = nginx_binary()
    redis = RedisServer().start()
    started: list[Replica] = []
    # Not pytest's tmp_path: nginx's unprivileged workers (when run as root) must reach the temp paths.
    prefix = Path(tempfile.mkdtemp(prefix="relay-nginx-"))
    prefix.chmod(0o755)
    front = Nginx(binary, prefix, free_port())
    try:
        for index in range(3):
            started.append(Replica({"REDIS_URL": redis.url}, name=f"n{index}").start())
        front.write_config([r.port for r in started])
        yield Cluster(front.start(), started)
    finally:
        front.stop()
        for replica in started:
            replica.stop()
        redis.cleanup()
        shutil.rmtree(prefix, ignore_errors=True)


class Editor:
    """One person in the room, always connected through nginx; keeps the document and the last seq."""

    def __init__(self, cluster: Cluster, code: str, user_token: str) -> None:
        self.cluster = cluster
        self.code = code
        self.token = user_token
        self.content = ""
        self.last_seq = 0
        self.home = ""  # the replica holding this editor's socket
        self.client = self._connect(resume=False)

    def _connect(self, *, resume: bool) -> Client:
        before = self.cluster.connections()
        client = Client(
            self.cluster.front.ws, self.code, self.token, last_seq=self.last_seq if resume else None
        )
        state = client.recv_type("room_state")
        if resume:
            assert state["resumed"] is True, (
                f"reconnect with last_seq={self.last_seq} did not resume: {state}"
            )
            for _ in range(state["replayed"]):
                self._apply(client.recv_type("editor_update"))
        else:
            self.content, self.last_seq = state["content"], state["seq"]
        assert self.last_seq == state["seq"]
        after = self.cluster.connections()
        (self.home,) = [name for name, count in after.items() if count == before.get(name, 0) + 1]
        return client

    def _apply(self, frame: dict[str, object]) -> None:
        seq = frame["seq"]
        assert isinstance(seq, int) and seq == self.last_seq + 1, (
            f"gap or repeat: {seq} after {self.last_seq}"
        )
        self.content, self.last_seq = str(frame["content"]), seq

    def edit(self, content: str) -> None:
        msg_id = f"m{self.last_seq + 1}-{len(content)}"
        self.client.send({"type": "editor_update", "content": content, "client_msg_id": msg_id})
        ack = self.client.recv_type("ack")
        assert ack["client_msg_id"] == msg_id and ack["seq"] == self.last_seq + 1, ack
        self.content, self.last_seq = content, int(ack["seq"])

    def expect(self, content: str) -> None:
        self._apply(self.client.recv_type("editor_update"))
        assert self.content == content

    def dropped(self) -> int | None:
        """Wait for the server side to go away; the close code the client saw (1006: no close frame)."""
        code, _ = self.client.wait_closed(timeout=30)
        return code

    def reconnect(self) -> None:
        self.client = self._connect(resume=True)


def test_nginx_round_robin_without_stickiness(cluster: Cluster) -> None:
    """Consecutive requests through nginx reach all three replicas in turn: round robin, no affinity."""
    with httpx.Client(base_url=cluster.front.http, timeout=5) as client:
        seen = [client.get("/api/health").json()["replica"] for _ in range(6)]
    assert len(set(seen)) == 3
    assert seen[:3] == seen[3:], f"not in turn: {seen}"


def test_editing_through_nginx_survives_sigterm_and_sigkill_of_replicas(cluster: Cluster) -> None:
    """Two editors through nginx keep one document, in order, while replicas die under them."""
    alice_token, bob_token = token("alice", name="Alice"), token("bob", name="Bob")
    code = create_room(cluster.front.http, alice_token)
    join_room(cluster.front.http, bob_token, code)
    alice = Editor(cluster, code, alice_token)
    bob = Editor(cluster, code, bob_token)
    assert alice.home != bob.home, "round robin should have put the two sockets on different replicas"

    alice.edit("a1")
    bob.expect("a1")
    bob.edit("a1 b1")
    alice.expect("a1 b1")

    # SIGTERM alice's replica: relay tells her to reconnect, then closes with 1012 (service restart);
    # both must come through nginx.
    stopping = next(r for r in cluster.replicas if r.name == alice.home)
    assert stopping.process is not None
    stopping.process.send_signal(signal.SIGTERM)
    assert alice.dropped() == 1012
    assert any(f.get("type") == "reconnect" for f in alice.client.frames), alice.client.frames[-3:]
    bob.edit("a1 b1 b2")  # while alice is away
    alice.reconnect()  # nginx skips the stopped replica
    assert alice.home != stopping.name
    assert alice.content == "a1 b1 b2", "the edit made while alice was away was replayed to her"
    # relay exits by itself after draining (uvicorn re-raises the SIGTERM it handled: -15), well before
    # Replica.stop's 30 s would resort to SIGKILL.
    assert stopping.stop() in (0, -signal.SIGTERM), f"relay did not drain and exit:\n{stopping.log()[-2000:]}"

    alice.edit("a1 b1 b2 a2")
    bob.expect("a1 b1 b2 a2")

    # SIGKILL bob's replica: no close frame, no drain; alice goes too if her new socket was there.
    killed = next(r for r in cluster.replicas if r.name == bob.home)
    lost = [e for e in (alice, bob) if e.home == killed.name]
    kept = [e for e in (alice, bob) if e.home != killed.name]
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    for editor in lost:
        assert editor.dropped() == 1006
    first, *others = lost
    first.reconnect()
    first.edit("a1 b1 b2 a2 k1")  # while the others of `lost` are away
    for editor in others:
        editor.reconnect()
        assert editor.content == "a1 b1 b2 a2 k1"
    for editor in kept:
        editor.expect("a1 b1 b2 a2 k1")

    (survivor,) = cluster.alive()
    assert cluster.connections() == {survivor.name: 2}
    assert alice.home == bob.home == survivor.name

    bob.edit("a1 b1 b2 a2 k1 b3")
    alice.expect("a1 b1 b2 a2 k1 b3")
    assert alice.last_seq == bob.last_seq == 6

    # A latecomer through nginx sees the same document at the same sequence number.
    late = Client(cluster.front.ws, code, alice_token)
    state = late.recv_type("room_state")
    assert (state["content"], state["seq"]) == ("a1 b1 b2 a2 k1 b3", 6)
    for client in (late, alice.client, bob.client):
        client.close()

    # The example's access log was written, with the sockets' paths and without their tokens.
    wait_for(lambda: f"/ws/{code}" in cluster.front.access_log.read_text(), 10, "the access log")
    log = cluster.front.access_log.read_text()
    assert "token" not in log and alice_token not in log and bob_token not in log and "eyJ" not in log


def test_nginx_answers_502_at_once_when_every_replica_is_gone(cluster: Cluster) -> None:
    """With all replicas stopped, REST and WebSocket handshakes get a prompt 502: the clients' cue to back off."""
    for replica in cluster.replicas:
        replica.stop()
    response = httpx.get(f"{cluster.front.http}/api/health", timeout=15)
    assert response.status_code == 502
    with pytest.raises(InvalidStatus) as refused:
        Client(cluster.front.ws, "ABCDEF", token("alice"))
    assert refused.value.response.status_code == 502
