"""The workload: what a run asks of the servers, and the rooms it sets up for it over HTTP.

R rooms x K members, each member a WebSocket on one of the replica URLs given, assigned round-robin so
that the members of a room sit on different replicas and every event crosses replicas through Redis.
Rooms are created and joined over HTTP exactly as the product's clients do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import secrets
from collections.abc import Sequence
from typing import Any

import httpx

from relay.auth import mint_dev_token


@dataclasses.dataclass(frozen=True)
class Workload:
    rooms: int
    members: int
    rate: float
    payload: int
    duration: float
    warmup: float
    drain: float
    editor_ratio: float
    idle: int
    client_deflate: bool
    origin: str | None
    seed: int

    @property
    def is_idle(self) -> bool:
        return self.idle > 0

    def describe(self) -> str:
        if self.is_idle:
            return f"{self.idle} idle connections ({self.members} per room)"
        return (
            f"{self.rooms} rooms x {self.members} members x {self.rate:g} ev/s, "
            f"{self.payload} B content, {self.editor_ratio:.0%} editor_update, "
            f"{self.duration:g} s measured after {self.warmup:g} s warm-up"
        )


@dataclasses.dataclass(frozen=True)
class MemberPlan:
    sender_id: int
    ws_url: str


@dataclasses.dataclass(frozen=True)
class RoomPlan:
    code: str
    members: tuple[MemberPlan, ...]


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    index: int
    rooms: tuple[RoomPlan, ...]
    workload: Workload


def ws_base(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


async def set_up_rooms(urls: Sequence[str], load: Workload, secret: str) -> list[RoomPlan]:
    """Create the rooms and join their members over HTTP, exactly as the product's clients do."""
    run_tag = secrets.token_hex(3)
    room_count = math.ceil(load.idle / load.members) if load.is_idle else load.rooms
    sender_ids = itertools.count()
    gate = asyncio.Semaphore(16)

    async def post(client: httpx.AsyncClient, url: str, path: str, token: str, body: Any) -> Any:
        async with gate:
            response = await client.post(
                f"{url.rstrip('/')}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        payload = response.json() if response.content else {}
        if response.status_code >= 400 or payload.get("status") != "success":
            raise RuntimeError(f"POST {url}{path} answered {response.status_code}: {response.text[:300]}")
        return payload

    async def one_room(client: httpx.AsyncClient, r: int, size: int) -> RoomPlan:
        tokens = [
            mint_dev_token(secret, f"bench-{run_tag}-{r}-{m}", name=f"Bench {r}.{m}") for m in range(size)
        ]
        member_urls = [urls[(r + m) % len(urls)] for m in range(size)]
        created = await post(client, member_urls[0], "/api/create-room", tokens[0], {})
        code = str(created["room_code"])
        await asyncio.gather(
            *(
                post(client, member_urls[m], "/api/join-room", tokens[m], {"room_code": code})
                for m in range(1, size)
            )
        )
        members = tuple(
            MemberPlan(next(sender_ids), f"{ws_base(member_urls[m])}/ws/{code}?token={tokens[m]}")
            for m in range(size)
        )
        return RoomPlan(code, members)

    sizes = [load.members] * room_count
    if load.is_idle and load.idle % load.members:
        sizes[-1] = load.idle % load.members
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(one_room(client, r, size) for r, size in enumerate(sizes))))
