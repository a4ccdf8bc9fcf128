"""A static file server on 127.0.0.1 (Python's http.server in a thread) that can misbehave.

It serves the files under ``root`` as any static server (a GitHub release, a lab's mirror) does,
Range headers ignored as http.server ignores them. Faults on demand, per file (path relative to
``root``): ``drop[path] = n`` sends the first half of the file n times (-1: every time) and
then drops the connection; ``stall`` holds the second half until ``release`` is set.
``requests`` logs (path, Range header) of every GET.
"""

from __future__ import annotations

import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class _Handler(SimpleHTTPRequestHandler):
    server: "FileServer"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def copyfile(self, source, outputfile) -> None:
        path = unquote(urlparse(self.path).path).lstrip("/")
        server = self.server
        server.requests.append((path, self.headers.get("Range")))
        drops = server.drop.get(path, 0)
        if drops == 0 and path not in server.stall:
            return super().copyfile(source, outputfile)
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        outputfile.flush()
        if path in server.stall:
            server.release.wait(120)
        if drops > 0:
            server.drop[path] = drops - 1
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class FileServer(ThreadingHTTPServer):
    """``FileServer(root).start()``; ``url`` is its address; ``stop()`` ends it."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.drop: dict[str, int] = {}
        self.stall: set[str] = set()
        self.release = threading.Event()
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(self.root)))
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # a dropped connection is the point, not news
        pass

    def start(self) -> "FileServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
