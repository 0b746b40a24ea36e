"""A local HTTP server that replays recorded provider exchanges (vcrpy cassettes).

Requests are answered in recorded order by method and path; streamed bodies (SSE, NDJSON) are
sent as chunked transfer encoding, one event per chunk, so clients really stream. Test knobs:
``break_after`` cuts the connection after that many chunks (a provider dying mid-stream).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "recordings"
_HOP_HEADERS = {"transfer-encoding", "content-length", "connection", "keep-alive"}


@dataclass
class Exchange:
    method: str
    path: str
    request_body: str | None
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def content_type(self) -> str:
        for k, v in self.headers:
            if k.lower() == "content-type":
                return v.lower()
        return ""

    @property
    def streamed(self) -> bool:
        ctype = self.content_type
        return "event-stream" in ctype or "ndjson" in ctype or "amazon.eventstream" in ctype


def load_cassette(path: Path) -> list[Exchange]:
    data = yaml.safe_load(path.read_text())
    out = []
    for it in data["interactions"]:
        req, resp = it["request"], it["response"]
        raw = resp["body"].get("string", b"")
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        headers = [(k, v) for k, vs in resp["headers"].items() for v in (vs if isinstance(vs, list) else [vs])]
        parts = urlsplit(req["uri"])
        path_q = parts.path + (f"?{parts.query}" if parts.query else "")
        out.append(Exchange(req["method"], path_q, req.get("body"), resp["status"]["code"], headers, body))
    return out


def stream_chunks(body: bytes, content_type: str) -> list[bytes]:
    if "amazon.eventstream" in content_type:  # binary frames, each sent in two writes (a cut frame)
        chunks, pos = [], 0
        while pos < len(body):
            end = pos + int.from_bytes(body[pos:pos + 4], "big")
            chunks += [body[pos:pos + 7], body[pos + 7:end]]
            pos = end
        return chunks
    sep = b"\n\n" if "event-stream" in content_type else b"\n"
    pieces = body.split(sep)
    chunks = [p + sep for p in pieces[:-1]]
    if pieces[-1]:
        chunks.append(pieces[-1])
    return [c for c in chunks if c.strip()] or [body]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (closed-early streams) are part of the tests


@dataclass
class ReplayServer:
    exchanges: list[Exchange]
    break_after: int | None = None
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    cursor: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # One write per event: without this, Nagle + delayed ACK add ~40 ms per chunk.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                ex = server.next_for(self.command, self.path, body)
                if ex is None:
                    msg = f"no recorded exchange for {self.command} {self.path}".encode()
                    self.send_response(599)
                    self.send_header("content-length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                self.send_response(ex.status)
                for k, v in ex.headers:
                    if k.lower() not in _HOP_HEADERS:
                        self.send_header(k, v)
                if ex.streamed:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i, chunk in enumerate(stream_chunks(ex.body, ex.content_type)):
                        if server.break_after is not None and i >= server.break_after:
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("content-length", str(len(ex.body)))
                    self.end_headers()
                    self.wfile.write(ex.body)

            do_POST = _serve
            do_GET = _serve

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def next_for(self, method: str, path: str, body: bytes) -> Exchange | None:
        with self._lock:
            self.received.append((method, path, body))
            for i in range(self.cursor, len(self.exchanges)):
                ex = self.exchanges[i]
                if ex.method == method and ex.path.split("?")[0] == path.split("?")[0]:
                    self.cursor = i + 1
                    return ex
            # Cassettes recorded once may be replayed again (sync then async): wrap around.
            for i, ex in enumerate(self.exchanges):
                if ex.method == method and ex.path.split("?")[0] == path.split("?")[0]:
                    self.cursor = i + 1
                    return ex
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_cassette(path: Path, **kwargs: Any) -> ReplayServer:
    return ReplayServer(load_cassette(path), **kwargs)


if __name__ == "__main__":  # used by the Node.js producer test: serve one cassette until killed
    import sys

    srv = serve_cassette(Path(sys.argv[1]))
    with srv:
        print(srv.url, flush=True)
        threading.Event().wait()
