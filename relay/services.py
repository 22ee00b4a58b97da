"""What the endpoints share within one worker process, built by app.py's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from relay.admission import Admission
from relay.auth import Authenticator
from relay.bus import PubSubBus
from relay.config import Settings
from relay.expiry import TokenClock
from relay.hub import Hub
from relay.limits import Quotas
from relay.rooms import Rooms
from relay.yjs_store import YjsStore


@dataclass(slots=True)
class Services:
    settings: Settings
    auth: Authenticator
    rooms: Rooms
    quotas: Quotas
    bus: PubSubBus
    hub: Hub
    admission: Admission
    yjs: YjsStore
    replica_id: str
    tokens: TokenClock
    is_draining: bool = False
