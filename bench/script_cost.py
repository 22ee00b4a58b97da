"""Redis CPU per call of relay's hot-path scripts (edit, cursor), measured with redis-benchmark.

    python -m bench.script_cost [--calls 100000] [--pipeline 16] [--document-bytes 200]

Starts its own redis-server on a free port, creates one room with two members, subscribes two
`redis-cli SUBSCRIBE` processes to the room's channel (two relay replicas with sockets in the room), then
runs `redis-benchmark EVALSHA` with the arguments relay sends for an editor_update (a fresh
client_msg_id per call) and for a cursor_update. Prints, per script, Redis's own `usec_per_call`
(INFO commandstats: time inside the script) and the redis-server process's CPU per call (the script plus
reading requests, writing replies and publishing), and the commands each script runs. The scripts are
this checkout's relay/lua/ files, so two checkouts can be compared on one machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

from bench.measure import cpu_seconds
from bench.processes import RedisServer
from relay import rooms
from relay.keys import RoomKeys
from relay.protocol import KIND_EVENT, EditorUpdate, Envelope, editor_update_event

CODE = "ABC234"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed (it comes with redis-server: apt-get install redis-tools)")
    return path


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 (our own argv)
        [_binary("redis-cli"), "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _script(name: str) -> str:
    return "local PUBLISH = 'PUBLISH'\n" + rooms._lua("prelude") + rooms._lua(name)


def _commandstats(port: int) -> dict[str, tuple[int, float]]:
    """command -> (calls, usec)"""
    stats = {}
    for line in _cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_") :].partition(":")
            values = dict(item.split("=") for item in fields.split(","))
            stats[name] = (int(values["calls"]), float(values["usec"]))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P (default 16)")
    parser.add_argument("--document-bytes", type=int, default=200)
    args = parser.parse_args()

    server = RedisServer().start()
    assert server.pid is not None
    port, keys = server.port, RoomKeys.of(CODE)
    subscribers: list[subprocess.Popen[bytes]] = []
    try:
        for name, script_args in (
            (
                "create",
                ["alice", '{"role":"interviewer","name":"A","joined_at":1}', "1", "86400", "", "", ""],
            ),
            ("join", ["bob", '{"role":"candidate","name":"B","joined_at":1}', "86400", "10", "10"]),
        ):
            _cli(port, "EVAL", _script(name), str(len(keys.all)), *keys.all, *script_args)
        subscribers = [
            subprocess.Popen(  # noqa: S603 (our own argv)
                [_binary("redis-cli"), "-p", str(port), "SUBSCRIBE", keys.channel], stdout=subprocess.DEVNULL
            )
            for _ in range(2)
        ]
        time.sleep(0.3)
        now = int(time.time() * 1000)
        document = ("def two_sum(nums, target):\n    seen = {}\n" * (args.document_bytes // 40 + 1))[
            : args.document_bytes
        ]
        # "__rand_int__": redis-benchmark puts a fresh number there on every call, so no edit is a resend.
        edit = EditorUpdate(document, {"lineNumber": 3}, "m__rand_int__", b'{"lineNumber":3}')
        event = editor_update_event(user_id="bob", user_name="B", edit=edit, origin="conn1", ts=now)
        cursor_frame = (
            b'{"type":"cursor_update","user_id":"bob","user_name":"B","cursor_position":[3],"ts":1}'
        )
        runs = {
            "edit": [
                "bob", document, '{"lineNumber":3}', "m__rand_int__", now, 86400, 500, now - 600_000,
                keys.channel, *event.script_args(),
            ],
            "cursor": [
                "bob", "[3]", Envelope(KIND_EVENT, "conn1", 0, None, now, cursor_frame).pack(),
                keys.channel, 86400,
            ],
        }  # fmt: skip
        for name, script_args in runs.items():
            sha = _cli(port, "SCRIPT", "LOAD", _script(name))
            _cli(port, "CONFIG", "RESETSTAT")
            cpu0 = cpu_seconds([server.pid])
            subprocess.run(  # noqa: S603 (our own argv)
                [
                    _binary("redis-benchmark"), "-p", str(port), "-n", str(args.calls), "-c", "4",
                    "-P", str(args.pipeline), "-r", "1000000000", "-q",
                    "EVALSHA", sha, str(len(keys.all)), *keys.all,
                    *(a.decode() if isinstance(a, bytes) else str(a) for a in script_args),
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            cpu = (cpu_seconds([server.pid]) - cpu0) * 1e6 / args.calls
            stats = _commandstats(port)
            calls, usec = stats.pop("evalsha")
            stats.pop("config|resetstat", None)
            inside = ", ".join(
                f"{command} x{count / calls:.2g}"
                for command, (count, _) in sorted(stats.items(), key=lambda item: -item[1][1])
            )
            print(
                f"{name:6s} inside the script {usec / calls:5.1f} us, redis-server CPU {cpu:5.1f} us per call"
            )
            print(f"       runs: {inside}")
    finally:
        for subscriber in subscribers:
            subscriber.terminate()
            subscriber.wait(5)
        server.cleanup()


if __name__ == "__main__":
    main()
