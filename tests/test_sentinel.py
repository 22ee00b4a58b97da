"""relay on Sentinel-managed Redis: a primary, its replica and a sentinel as processes; the primary dies."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import RedisServer, free_port, wait_for
from relay.config import ConfigError, MultiNodeURL, Settings
from tests.cluster_support import cli, delivered_edits, edit_until_acked
from tests.support import Client, create_room, join_room, replicas, token

pytestmark = pytest.mark.cluster

SERVICE = "relay-primary"


class SentinelSet:
    """A primary, a replica in sync with it, and one sentinel (quorum 1) watching them."""

    def __init__(self) -> None:
        self.primary = RedisServer().start()
        self.replica = RedisServer().start()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-sentinel-"))
        self.port = free_port()
        self.sentinel: subprocess.Popen[bytes] | None = None
        try:
            cli(self.primary.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
            cli(self.replica.port, "REPLICAOF", "127.0.0.1", str(self.primary.port))
            wait_for(self._replica_in_sync, 20, "the replica to sync")
            config = self.dir / "sentinel.conf"
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            binary = shutil.which("redis-server")
            assert binary is not None
            self.sentinel = subprocess.Popen(
                [binary, str(config), "--sentinel", "--logfile", str(self.dir / "log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(self._sentinel_knows_primary, 20, "the sentinel to see the primary")
        except BaseException:
            self.cleanup()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"

    def _replica_in_sync(self) -> bool:
        return "master_link_status:up" in cli(self.replica.port, "INFO", "replication")

    def _sentinel_knows_primary(self) -> bool:
        try:
            return self.primary_port() == self.primary.port
        except subprocess.SubprocessError:
            return False

    def primary_port(self) -> int:
        reply = cli(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE).split()
        return int(reply[1])

    def cleanup(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.send_signal(signal.SIGKILL)
            self.sentinel.wait(5)
        for server in (self.primary, self.replica):
            server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def sentinel_set() -> Iterator[SentinelSet]:
    started = SentinelSet()
    yield started
    started.cleanup()


def test_primary_killed_sentinel_promotes_the_replica_and_clients_resume(sentinel_set: SentinelSet) -> None:
    """REDIS_URL=redis+sentinel://...: relay finds the primary through the sentinel; after the primary is
    SIGKILLed and the sentinel promotes its replica, resent edits are acked by the new primary and the
    member on the other relay replica has every acked edit once, in order. (On loopback the replica has
    every write acked before the kill; README says what a failover over a real network may lose.)"""
    env = {"REDIS_URL": sentinel_set.url, "RELAY_REDIS_LINK_TIMEOUT": "3"}
    with replicas(2, env) as (a, b):
        alice, bob = token("alice"), token("bob")
        code = create_room(a.http, alice)
        join_room(b.http, bob, code)
        writer, reader = Client(a.ws, code, alice), Client(b.ws, code, bob)
        writer.recv_type("room_state")
        reader.recv_type("room_state")
        acked = {edit_until_acked(writer, f"v{n}", f"m{n}"): f"v{n}" for n in range(1, 6)}
        sentinel_set.primary.stop(signal.SIGKILL)
        wait_for(lambda: sentinel_set.primary_port() == sentinel_set.replica.port, 30, "the failover")
        for n in range(6, 12):
            acked[edit_until_acked(writer, f"v{n}", f"m{n}")] = f"v{n}"
        got = delivered_edits(reader, max(acked))
        assert {seq: got.get(seq) for seq in acked} == acked
        statuses = [f["available"] for f in reader.frames if f.get("type") == "redis_status"]
        assert statuses[:1] == [False] and statuses[-1] is True, statuses
        writer.close()
        reader.close()


def test_sentinel_url_is_parsed_and_its_password_never_echoed() -> None:
    """redis+sentinel://[user:password@]sentinel:port,.../service[/db]: a bad one names what is wrong."""
    url = MultiNodeURL.parse("rediss+sentinel://:s3cret@s1:26379,s2:26379/mymaster/2")
    assert (url.nodes, url.service, url.db, url.password, url.tls) == (
        ("s1:26379", "s2:26379"),
        "mymaster",
        2,
        "s3cret",
        True,
    )
    assert "s3cret" not in repr(url)
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true", "REDIS_URL": "redis+sentinel://s:1/m"})
    assert settings.redis_sentinel and not settings.redis_cluster
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"RELAY_DEV_MODE": "true", "REDIS_URL": "redis+sentinel://:s3cret@s:1"})
    assert "service" in str(refused.value) and "s3cret" not in str(refused.value)
