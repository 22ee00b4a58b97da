"""A TCP load balancer with failover, for tests: each new connection goes to the first backend (in the
order given) that accepts it, so a killed replica's clients land on the next one when they reconnect."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.support import free_port

CONNECT_TIMEOUT = 2.0


class FailoverBalancer:
    def __init__(self, backend_ports: list[int]) -> None:
        self.backend_ports = backend_ports
        self.port = free_port()
        self.connections_per_backend: dict[int, int] = dict.fromkeys(backend_ports, 0)
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FailoverBalancer:
        threading.Thread(target=self._accept, daemon=True, name=f"balancer-{self.port}").start()
        return self

    def stop(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for port in self.backend_ports:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections_per_backend[port] += 1
            break
        if upstream is None:
            client.close()  # every backend is down: the client sees a dropped connection and retries
            return
        with self._lock:
            self._sockets |= {client, upstream}
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets -= {client, upstream}
