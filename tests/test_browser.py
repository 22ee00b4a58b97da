"""A real browser: Debian's Chromium (driven by Playwright) on the interview page, two people typing at
once through two replicas, then replicas killed under them.

Each page is served through its own failover balancer (tests/balancer.py): Alice's prefers replica A,
Bob's prefers replica B, so they type through different replicas and a page whose replica dies
reconnects to the other one, as behind a real load balancer. Screenshots go to artifacts/ (kept by CI).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from tests.balancer import FailoverBalancer
from tests.support import REPO, RedisServer, Replica, auth

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "artifacts"
REPLICA_ENV = {"RELAY_PRESENCE_TTL": "6"}
# What each person types, in rounds; every character is unique to its typist and round, so "present
# exactly once" is a count per character. Letters, digits and newlines only: the room is plain text, so
# no completion, bracket closing or auto-indent adds characters of its own.
ALICE_ROUNDS = ["abcdefghijklmnop", "qrstuvwxyz", "ГДЕЖЗИЙКЛМ"]
BOB_ROUNDS = ["ABCDEFGHIJKLMNOP", "QRSTUVWXYZ", "0123456789"]


def chromium_available() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; .ci/run installs it")
    pytest.skip(f"{problem}; CI runs this test")


@pytest.fixture
def cluster() -> Iterator[tuple[RedisServer, list[Replica]]]:
    """A redis-server and two replicas of this test's own (the test kills and restarts them)."""
    chromium_available()
    redis = RedisServer().start()
    started: list[Replica] = []
    try:
        env = {**REPLICA_ENV, "REDIS_URL": redis.url}
        started += [Replica(env, name="browser-a").start(), Replica(env, name="browser-b").start()]
        yield redis, started
    finally:
        for replica in started:
            replica.stop(signal.SIGKILL)
        redis.cleanup()


async def editor_text(page: Page) -> str:
    """What the page's editor shows (CodeMirror's document, bound to the shared Y.Text)."""
    return str(await page.evaluate("window.relayRoom ? window.relayRoom.view.state.doc.toString() : null"))


async def sign_in(page: Page, base: str, name: str, role: str) -> None:
    await page.goto(f"{base}/")
    await page.fill("#signin-name", name)
    await page.check(f"input[name=role][value={role}]")
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#lobby:not([hidden])")


async def wait_synced(page: Page, reconnects: int = 0, within: float = 30) -> None:
    await page.wait_for_function(
        "([n]) => { const c = document.getElementById('connection');"
        " return c.dataset.synced === 'true' && Number(c.dataset.reconnects) >= n }",
        arg=[reconnects],
        timeout=within * 1000,
    )


async def type_like_a_person(page: Page, chars: str, seed: int) -> None:
    """Click into the editor, then type each character after moving the cursor somewhere else."""
    rng = random.Random(seed)
    await page.click(".cm-content")
    for index, char in enumerate(chars):
        await page.keyboard.press(
            rng.choice(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"])
        )
        await page.keyboard.type(char, delay=15)
        if index % 6 == 5:
            await page.keyboard.press("Enter")


async def converge(pages: list[Page], typed: str, within: float = 30) -> str:
    """Both editors show one text holding every typed character exactly once (newlines aside)."""
    expected = Counter(typed)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        texts = [await editor_text(page) for page in pages]
        if len(set(texts)) == 1 and Counter(texts[0].replace("\n", "")) == expected:
            return texts[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"editors did not converge on every typed character: {texts!r}")
        await asyncio.sleep(0.1)


async def screenshot(pages: dict[str, Page], stage: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name, page in pages.items():
        await page.screenshot(path=str(ARTIFACTS / f"browser-{stage}-{name}.png"))


async def remote_caret_named(page: Page, name: str) -> None:
    caret = page.locator(".cm-ySelectionCaret", has_text=name)
    await caret.first.wait_for(state="visible", timeout=20000)


async def whole_document_shows(replica: Replica, code: str, user_token: str, text: str) -> None:
    """GET /api/room/{code} serves the same text (relay mirrors Yjs edits into it, coalesced)."""
    async with httpx.AsyncClient(base_url=replica.http, headers=auth(user_token), timeout=10) as client:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            content = (await client.get(f"/api/room/{code}")).json().get("editor_content")
            if content == text:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"GET /api/room/{code} shows {content!r}, the editors {text!r}")
            await asyncio.sleep(0.2)


async def browser_session(
    redis: RedisServer, replicas: list[Replica], balancers: dict[str, FailoverBalancer]
) -> None:
    a, b = replicas
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice_context = await browser.new_context(viewport={"width": 1100, "height": 700})
            bob_context = await browser.new_context(viewport={"width": 1100, "height": 700})
            alice, bob = await alice_context.new_page(), await bob_context.new_page()
            errors: list[str] = []
            for page in (alice, bob):
                page.on("pageerror", lambda error: errors.append(str(error)))
            pages = {"alice": alice, "bob": bob}

            # Alice (interviewer) creates a plain-text room through replica A; Bob joins through B.
            await sign_in(alice, balancers["alice"].http, "Alice", "interviewer")
            await alice.select_option("#create-language", "plaintext")
            await alice.click("#create-form button[type=submit]")
            await alice.wait_for_selector("#room:not([hidden])")
            code = (await alice.inner_text("#room-code")).strip()
            await sign_in(bob, balancers["bob"].http, "Bob", "candidate")
            await bob.fill("#join-code", code)
            await bob.click("#join-form button[type=submit]")
            await bob.wait_for_selector("#room:not([hidden])")
            await asyncio.gather(wait_synced(alice), wait_synced(bob))
            await bob.locator('#member-list li[data-connected="true"]', has_text="Alice").wait_for()
            await alice.locator('#member-list li[data-connected="true"]', has_text="Bob").wait_for()

            # Round 1: both type at once, each through its own replica.
            await asyncio.gather(
                type_like_a_person(alice, ALICE_ROUNDS[0], seed=1),
                type_like_a_person(bob, BOB_ROUNDS[0], seed=2),
            )
            await converge([alice, bob], ALICE_ROUNDS[0] + BOB_ROUNDS[0])
            await asyncio.gather(remote_caret_named(alice, "Bob"), remote_caret_named(bob, "Alice"))
            await screenshot(pages, "1-typed")

            # Round 2: replica A dies (SIGKILL) under Alice; both keep typing at once, Alice before her
            # page has even noticed. Her page reconnects through the balancer to B.
            a.stop(signal.SIGKILL)
            await asyncio.gather(
                type_like_a_person(alice, ALICE_ROUNDS[1], seed=3),
                type_like_a_person(bob, BOB_ROUNDS[1], seed=4),
            )
            await wait_synced(alice, reconnects=1)
            await converge([alice, bob], "".join(ALICE_ROUNDS[:2] + BOB_ROUNDS[:2]))

            # Round 3: A comes back, B dies: now both pages lose their socket and reconnect to A.
            replicas[0] = Replica(
                {**REPLICA_ENV, "REDIS_URL": redis.url}, port=a.port, name="browser-a2"
            ).start()
            b.stop(signal.SIGKILL)
            await asyncio.gather(
                type_like_a_person(alice, ALICE_ROUNDS[2], seed=5),
                type_like_a_person(bob, BOB_ROUNDS[2], seed=6),
            )
            await asyncio.gather(wait_synced(alice, reconnects=2), wait_synced(bob, reconnects=1))
            final = await converge([alice, bob], "".join(ALICE_ROUNDS + BOB_ROUNDS))
            await asyncio.gather(remote_caret_named(alice, "Bob"), remote_caret_named(bob, "Alice"))
            await screenshot(pages, "2-after-failover")

            # Whole-document clients (GET /api/room/{code}, room_state) see the same text.
            alice_token = await alice.evaluate(
                "() => JSON.parse(sessionStorage.getItem('relay.session')).token"
            )
            await whole_document_shows(replicas[0], code, alice_token, final)

            # A page opened now, on the surviving replica, loads the same document.
            late = await (await browser.new_context()).new_page()
            await sign_in(late, balancers["alice"].http, "Alice", "interviewer")
            await late.goto(f"{balancers['alice'].http}/#/room/{code}")
            await wait_synced(late)
            assert await converge([late], "".join(ALICE_ROUNDS + BOB_ROUNDS)) == final

            # The language picker is shared through the room's document: Bob picks Go, Alice's page follows.
            await bob.select_option("#room-language", "go")
            await alice.wait_for_function("() => document.getElementById('room-language').value === 'go'")
            assert await editor_text(alice) == final  # the picker is not part of the text

            # The interviewer closes the room: Bob's page says so and stops editing.
            alice.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await alice.click("#close-room")
            await bob.wait_for_selector('#connection[data-status="closed"]', timeout=20000)
            assert "closed this room" in await bob.inner_text("#notice")
            await screenshot(pages, "3-closed")
            assert not errors, errors
        finally:
            await browser.close()


def test_two_browsers_type_together_through_two_replicas_and_survive_replica_deaths(
    cluster: tuple[RedisServer, list[Replica]],
) -> None:
    """Two Chromium pages type into the editor at the same time through two replicas: identical text with
    every typed character, each sees the other's named cursor; replicas killed under them: they reconnect
    (through the balancer) and keep typing, nothing typed is lost; the interviewer closes the room."""
    redis, replicas = cluster
    a, b = replicas
    balancers = {
        "alice": FailoverBalancer([a.port, b.port]).start(),
        "bob": FailoverBalancer([b.port, a.port]).start(),
    }
    try:
        asyncio.run(browser_session(redis, replicas, balancers))
    finally:
        for balancer in balancers.values():
            balancer.stop()
    assert balancers["alice"].connections_per_backend[b.port] > 0  # Alice's page did fail over
