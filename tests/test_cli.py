"""`relay serve` start-up checks, the embedded mode, .env files and `relay token`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import jwt
import pytest

from relay.config import DEV_JWT_SECRET
from tests.support import REPO, Replica, connected_pair, free_port, wait_for


def run_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SUPABASE_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--port", "1", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tempfile.gettempdir(),
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "SUPABASE_URL"),
        ({"RELAY_DEV_MODE": "true", "RELAY_ROOM_TTL": "abc"}, "RELAY_ROOM_TTL must be an integer, got 'abc'"),
        ({"RELAY_DEV_MODE": "maybe"}, "RELAY_DEV_MODE must be true or false"),
        ({"SUPABASE_JWT_SECRET": DEV_JWT_SECRET}, "public development secret"),
        ({"SUPABASE_JWT_SECRET": "short"}, "SUPABASE_JWT_SECRET must be at least 32 bytes"),
        ({"SUPABASE_URL": "supabase.co"}, "SUPABASE_URL must be an http(s) URL"),
        ({"RELAY_DEV_MODE": "true", "RELAY_WORKERS": "2"}, "RELAY_WORKERS=2 needs REDIS_URL"),
        ({"RELAY_DEV_MODE": "true", "REDIS_URL": "http://x"}, "REDIS_URL must be a redis://"),
        ({"RELAY_DEV_MODE": "true", "RELAY_ALLOWED_ORIGINS": "example.com"}, "RELAY_ALLOWED_ORIGINS"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line(env: dict[str, str], needle: str) -> None:
    result = run_serve(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_redis_url_password_is_not_echoed() -> None:
    result = run_serve({"RELAY_DEV_MODE": "true", "REDIS_URL": "http://user:hunter2@host"})
    assert result.returncode == 2 and "hunter2" not in result.stderr


def test_embedded_mode_needs_nothing_and_says_so() -> None:
    """No REDIS_URL, dev mode: two clients create, join and edit on the in-process store."""
    replica = Replica({"REDIS_URL": ""}, name="embedded")
    replica.env.pop("REDIS_URL")
    replica.start()
    try:
        _, a, b = connected_pair(replica)
        a.send({"type": "editor_update", "content": "hello"})
        assert b.recv_type("editor_update")["content"] == "hello"
        assert a.recv_type("ack")["seq"] == 1
        a.close()
        b.close()
    finally:
        replica.stop()
    assert "embedded in-process store" in replica.log()


def test_env_file_is_read(tmp_path: Path) -> None:
    """Settings come from .env in the working directory; real environment variables win over it."""
    (tmp_path / ".env").write_text("# comment\nRELAY_DEV_MODE=true\nRELAY_ROOM_TTL='abc'\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SUPABASE_", "REDIS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "RELAY_ROOM_TTL" in result.stderr


def test_token_command_mints_a_verifiable_dev_token() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SUPABASE_", "REDIS_"))}
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "token", "--user", "alice", "--name", "Alice"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(out, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == "alice" and claims["user_metadata"]["full_name"] == "Alice"


def test_serve_dev_starts_with_no_settings_at_all(tmp_path: Path) -> None:
    """README's first command on a clean machine: no RELAY_* / SUPABASE_* / REDIS_URL, no .env.

    Every other test sets RELAY_DEV_MODE itself, which once hid that `--dev` alone failed validation.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SUPABASE_", "REDIS_"))}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve", "--dev", "--port", str(port)],
        env={**clean, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"relay serve --dev exited with {process.returncode}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 20, "relay serve --dev")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "configuration error" not in output, output
