"""Real network faults for the PostgreSQL tests: a namespace behind a veth link, a TCP relay.

``Link.create()`` makes a network namespace joined to the root namespace by a veth pair with
addresses from a random private /30 (10.200.0.0/16) that exists only on this machine, and a
``Relay`` in the test process that accepts connections on the root end's address and forwards
them to the server (which listens on loopback only, and is left untouched).  A process started
with ``Link.command`` reaches the server only through that link.

``Link.cut()`` sets the root end down: what the namespace sends is dropped without a word, so
its TCP connections hang as in a real partition (no reset, no FIN); ``heal()`` sets it up.
``remove()`` undoes everything and may be called at any point of ``create``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence

import pytest
from psycopg import conninfo

_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_namespaces() -> None:
    """Skip (fail under ``CI=true``) where this process cannot make network namespaces."""
    problem = None
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    elif shutil.which("ip") is None:
        problem = "network namespaces need the ip command (Debian package iproute2)"
    if problem is not None:
        if _CI:
            pytest.fail(f"CI must run the partition tests: {problem}")
        pytest.skip(problem)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Relay:
    """Forwards every TCP connection made to ``(host, port)`` to ``target`` (two threads each).

    When one side ends, both are closed, as the server would end a session whose client left.
    """

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server((host, 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: Connections accepted so far.
        self.accepted = 0
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.accepted += 1
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for each in (source, sink):
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            with self._lock:
                self._sockets -= {source, sink}

    def close(self) -> None:
        """Stop accepting and end every relayed connection."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = set(self._sockets), set()
            threads = list(self._threads)
        self._server.close()
        for each in sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()
        for thread in threads:
            thread.join(timeout=5)


class Link:
    """A namespace, its veth link to the root namespace, and a relay to the server."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"te-part-{tag}"
        self.root_end = f"tep{tag}r"  # interface names have at most 15 characters
        self.inner_end = f"tep{tag}n"
        self.root_address, self.inner_address = _free_subnet()
        self.relay: Relay | None = None

    @classmethod
    @contextlib.contextmanager
    def create(cls, server: tuple[str, int]) -> Iterator[Link]:
        """A link whose relay forwards to ``server``; removed on exit, whatever happened."""
        link = cls()
        try:
            try:
                _ip("netns", "add", link.namespace)
                _ip("link", "add", link.root_end, "type", "veth", "peer", "name", link.inner_end)
                _ip("link", "set", link.inner_end, "netns", link.namespace)
                _ip("addr", "add", f"{link.root_address}/30", "dev", link.root_end)
                _ip("link", "set", link.root_end, "up")
                inner = ("-n", link.namespace)
                _ip(*inner, "addr", "add", f"{link.inner_address}/30", "dev", link.inner_end)
                _ip(*inner, "link", "set", link.inner_end, "up")
                _ip(*inner, "link", "set", "lo", "up")
            except subprocess.CalledProcessError as exc:
                problem = f"cannot make a network namespace: {exc.stderr.decode().strip()}"
                if _CI:
                    pytest.fail(f"CI must run the partition tests: {problem}")
                pytest.skip(problem)
            link.relay = Relay(link.root_address, server)
            yield link
        finally:
            link.remove()

    def dsn(self, dsn: str) -> str:
        """``dsn`` rewritten to reach the server through this link (from the namespace)."""
        assert self.relay is not None
        return conninfo.make_conninfo(dsn, host=self.root_address, port=str(self.relay.port))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        """Drop everything between the namespace and the root namespace, silently."""
        _ip("link", "set", self.root_end, "down")

    def heal(self) -> None:
        """Carry packets again."""
        _ip("link", "set", self.root_end, "up")

    def remove(self) -> None:
        """Close the relay, delete the veth pair (both ends) and the namespace."""
        if self.relay is not None:
            self.relay.close()
        for args in (("link", "del", self.root_end), ("netns", "del", self.namespace)):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip(*args)


def _free_subnet() -> tuple[str, str]:
    """The two host addresses of a 10.200.0.0/16 /30 that no interface here uses."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    for _ in range(100):
        block = random.randrange(16384) * 4
        base = f"10.200.{block // 256}."
        first, second = f"{base}{block % 256 + 1}", f"{base}{block % 256 + 2}"
        if f" {first}/" not in used and f" {second}/" not in used:
            return first, second
    raise AssertionError("no free /30 in 10.200.0.0/16")


def namespaces_here() -> list[str]:
    """Names of the network namespaces that exist now."""
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def interfaces_here() -> list[str]:
    """Names of the root namespace's network interfaces."""
    listed = subprocess.run(
        ["ip", "-o", "link", "show"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in listed.splitlines()]
