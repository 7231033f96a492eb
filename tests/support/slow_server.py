"""An HTTP server on 127.0.0.1 that answers slowly, byte by byte: what per-read timeouts miss."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def trickling_server(body: bytes, *, seconds_per_byte: float) -> Iterator[str]:
    """Serve one request: the headers at once, then ``body`` one byte at a time. Each byte
    arrives well within any read timeout; the whole answer takes len(body) x the pause."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(65_536)  # the request: small, one read is enough here
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            try:
                connection.sendall(head.encode())
                for byte in body:
                    if stop.wait(seconds_per_byte):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client hung up: what a deadline should make it do

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
