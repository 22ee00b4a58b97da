"""The interview page at `/` and development sign-in (`POST /api/dev/token`), in process on the embedded store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from starlette.testclient import TestClient

from relay.app import create_app
from relay.config import DEV_JWT_SECRET, Settings
from relay.page import STATIC_DIR
from tests.support import REPO

PRODUCTION = {"SUPABASE_JWT_SECRET": "p" * 40}


def client(env: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings.from_environ(env))) as test_client:
        yield test_client


@pytest.fixture
def dev() -> Iterator[TestClient]:
    yield from client({"RELAY_DEV_MODE": "true"})


def mint(test_client: TestClient, **body: str) -> dict[str, object]:
    response = test_client.post("/api/dev/token", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def bearer(data: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {data['token']}"}


def test_dev_mode_serves_the_page_and_its_bundle(dev: TestClient) -> None:
    page = dev.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-dev-signin="true"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        response = dev.get(asset)
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert f'"{asset}"' in page.text
    # The bundle is the built page (y-websocket provider on /yjs, the shared text named "content").
    bundle = dev.get("/static/app.js").text
    assert "/yjs" in bundle and '"content"' in bundle
    assert dev.get("/static/nothing-here.js").status_code == 404
    compressed = dev.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["content-encoding"] == "gzip" and compressed.text == bundle
    assert compressed.num_bytes_downloaded < len(bundle.encode()) / 2


def test_dev_token_signs_in_interviewers_and_candidates(dev: TestClient) -> None:
    ines = mint(dev, name="Ines", role="interviewer")
    assert ines["user_id"] == "dev-ines" and ines["user_name"] == "Ines" and ines["is_interviewer"] is True
    claims = jwt.decode(str(ines["token"]), DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["app_metadata"] == {"role": "interviewer"}
    assert claims["exp"] == ines["expires_at"]

    created = dev.post("/api/create-room", headers=bearer(ines), json={"language": "go"})
    assert created.status_code == 200
    code = created.json()["room_code"]

    carl = mint(dev, name="Carl Candidate", role="candidate")
    assert carl["user_id"] == "dev-carl-candidate" and carl["is_interviewer"] is False
    assert (
        dev.post("/api/join-room", headers=bearer(carl), json={"room_code": code}).json()["role"]
        == "candidate"
    )
    # Another interviewer joining (the claim, not the URL or the page, makes the role).
    ivy = mint(dev, name="Ivy", role="interviewer", user_id="ivy-2")
    assert ivy["user_id"] == "ivy-2"
    assert (
        dev.post("/api/join-room", headers=bearer(ivy), json={"room_code": code}).json()["role"]
        == "interviewer"
    )
    # Only interviewers close rooms: the candidate is refused, the second interviewer may.
    assert dev.delete(f"/api/room/{code}", headers=bearer(carl)).status_code == 403
    assert dev.delete(f"/api/room/{code}", headers=bearer(ivy)).status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"role": "interviewer"}, "name must be a non-empty string"),
        ({"name": "   ", "role": "candidate"}, "name must be a non-empty string"),
        ({"name": "x" * 81, "role": "candidate"}, "at most 80 characters"),
        ({"name": "Eve", "role": "admin"}, "role must be one of interviewer, candidate"),
        ({"name": "Eve", "role": "candidate", "user_id": "a b"}, "user_id must be"),
        ({"name": "Eve", "role": "candidate", "user_id": "x" * 65}, "user_id must be"),
        ({"name": "Eve", "app_metadata": {"role": "interviewer"}}, "unknown field(s) app_metadata"),
    ],
)
def test_dev_token_refuses_bad_requests(dev: TestClient, body: dict[str, object], needle: str) -> None:
    response = dev.post("/api/dev/token", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "bad_request"
    assert needle in response.json()["message"]


def test_production_has_neither_the_page_nor_dev_tokens() -> None:
    for test_client in client(PRODUCTION):
        for method, path in (("GET", "/"), ("GET", "/static/app.js"), ("POST", "/api/dev/token")):
            response = test_client.request(method, path, json={"name": "Mallory", "role": "interviewer"})
            assert response.status_code == 404, (method, path)
            assert response.json()["code"] == "not_found"


def test_production_serves_the_page_when_asked_but_still_mints_nothing() -> None:
    for test_client in client({**PRODUCTION, "RELAY_SERVE_PAGE": "true"}):
        page = test_client.get("/")
        assert page.status_code == 200
        assert 'data-dev-signin="false"' in page.text  # the page asks for an access token instead
        assert test_client.get("/static/app.js").status_code == 200
        assert test_client.post("/api/dev/token", json={"name": "M", "role": "candidate"}).status_code == 404


def test_dev_mode_can_turn_the_page_off() -> None:
    for test_client in client({"RELAY_DEV_MODE": "true", "RELAY_SERVE_PAGE": "false"}):
        assert test_client.get("/").status_code == 404
        assert test_client.post("/api/dev/token", json={"name": "Al", "role": "candidate"}).status_code == 200


def test_serve_page_setting_is_validated() -> None:
    from relay.config import ConfigError

    with pytest.raises(ConfigError, match="RELAY_SERVE_PAGE must be true or false"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SERVE_PAGE": "sometimes"})


def test_the_page_is_package_data(tmp_path: Path) -> None:
    """A wheel carries what `build_py` collects: the built page must be in it (relay ships without Node)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "-d",
            str(tmp_path),
        ],
        cwd=REPO,
        check=True,
        timeout=120,
        capture_output=True,
    )
    shipped = {path.name for path in (tmp_path / "relay" / "static").iterdir()}
    assert {"index.html", "app.js", "app.css"} <= shipped
    assert shipped == {path.name for path in STATIC_DIR.iterdir()}
    # Nothing of the front-end sources or node_modules rides along.
    assert not list(tmp_path.glob("**/node_modules")) and not (tmp_path / "web").exists()
