"""A loopback TCP proxy whose link can be cut: bytes stop flowing both ways, sockets stay open.

That is what a network partition looks like to a client: no reset, no FIN, just silence, so only
the client's own timeouts can notice it. `heal()` then drops every connection, as a link that
comes back after the peers gave up would.
"""

from __future__ import annotations

import selectors
import socket
import threading

from gateway.cli import free_port


class TCPProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """From now on nothing is forwarded, and new connections are accepted but never answered."""
        self._flowing.clear()

    def heal(self) -> None:
        """Close every connection that lived through the cut, then forward again."""
        with self._lock:
            for sock in list(self._peers):
                self._drop(sock)
        self._flowing.set()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(10)
        with self._lock:
            for sock in list(self._peers):
                self._drop(sock)
        self._listener.close()

    def _drop(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        for each in (sock, other):
            if each is None:
                continue
            self._peers.pop(each, None)
            try:
                self._selector.unregister(each)
            except (KeyError, ValueError):
                pass
            each.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                with self._lock:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif self._flowing.is_set() and sock in self._peers:
                        self._forward(sock)
            if not self._flowing.is_set():
                self._stopped.wait(0.05)  # a cut link: leave the data unread in the kernel's buffers

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if not self._flowing.is_set():
            self._peers[client] = client  # held open and silent, like a SYN into a partition
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        try:
            self._peers[sock].sendall(data)
        except OSError:
            self._drop(sock)
