"""A test-only server speaking ClickHouse's HTTP interface, executing on chdb.

No ClickHouse server can be installed here, so the ``http(s)://`` store path is tested
against this: clickhouse-connect's real client connects, runs its handshake queries,
inserts in Native or Arrow format (plain, chunked transfer encoding, lz4/zstd/gzip
bodies) and selects. Enough of the protocol for that, and no more.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import lz4.frame
import zstandard

_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<table>[`\"\w.]+)\s*(?P<cols>\([^)]*\))?\s*FORMAT\s+(?P<fmt>\w+)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_BODY_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s.*?\sFORMAT\s+\w+)[ \t]*\r?\n", re.I | re.S)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# Settings of an insert, from its URL, that the server applies (the rest are clickhouse-connect's
# own or have no bearing on what these tests check).
_INSERT_SETTINGS = ("insert_deduplicate", "insert_deduplication_token")


class ChdbHttpServer:
    """Serves on 127.0.0.1:<free port>; ``writer``/``reader`` are chdb connections."""

    def __init__(self, writer, reader) -> None:
        self.writer = writer
        self.reader = reader
        self.lock = threading.Lock()
        self.fail_inserts = False  # simulate an unavailable store: inserts answer 500
        # simulate a reply lost after the store took the rows (a timeout, a proxy's reset): the
        # insert is done, then answered with a retryable error
        self.lose_insert_replies = False
        # simulate a kill between the store taking an insert and its reply reaching the client: the
        # insert is done, and its reply waits until ``replies_released`` is set
        self.hold_insert_replies = False
        self.replies_released = threading.Event()
        # simulate limits on how much one insert may be: over max_insert_rows, the server's own
        # memory limit (500, code 241, as ClickHouse answers); over max_request_bytes on the wire, a
        # proxy in front of it (413, no ClickHouse headers)
        self.max_insert_rows: int | None = None
        self.max_request_bytes: int | None = None
        self.inserted_rows: list[int] = []  # per insert taken, while max_insert_rows is set
        self.requests: list[dict[str, object]] = []
        self.tmpdir = tempfile.mkdtemp(prefix="chserver-")
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def wait_spans(self, expected: int, timeout: float = 30.0) -> tuple[int, int]:
        """(rows, distinct span ids) in the test database's otel_traces, once ``expected`` rows
        are there or ``timeout`` has passed."""
        table = f"{self.database}.otel_traces"
        deadline = time.monotonic() + timeout
        while True:
            rows, distinct = (int(x) for x in self.reader.query(
                f"SELECT count(), uniqExact(SpanId) FROM {table}", "TSV").bytes().split())
            if rows >= expected or time.monotonic() > deadline:
                return rows, distinct
            time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChdbHttpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.replies_released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class _Handler(BaseHTTPRequestHandler):
    owner: ChdbHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        """The request's body, decompressed; its size on the wire in ``self.wire_bytes``."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(out)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.wire_bytes = len(body)
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding == "lz4":
            body = lz4.frame.decompress(body)
        elif encoding == "zstd":
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif encoding == "gzip":
            body = gzip.decompress(body)
        return body

    def _reply(self, status: int, body: bytes, fmt: str = "", summary: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-test-server")
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Summary", json.dumps(summary or {"written_rows": "0"}))
        if status != 200:  # the error's code, as the server sends it
            code = re.match(rb"Code: (\d+)", body)
            self.send_header("X-ClickHouse-Exception-Code", code.group(1).decode() if code else "0")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        params = parse_qs(urlsplit(self.path).query)
        if urlsplit(self.path).path in ("/ping", "/"):
            self._reply(200, b"Ok.\n")
            return
        self._execute(params.get("query", [""])[0], b"", params)

    def do_POST(self) -> None:
        params = parse_qs(urlsplit(self.path).query)
        body = self._read_body()
        limit = self.owner.max_request_bytes
        if limit is not None and self.wire_bytes > limit:
            page = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>"
            self.send_response(413)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if "query" in params:
            self._execute(params["query"][0], body, params)
            return
        # clickhouse-connect streams `INSERT … FORMAT X\n<data>` as one (chunked) body.
        head = _BODY_INSERT.match(body)
        if head:
            self._execute(head.group(1).decode(), body[head.end():], params)
        else:
            self._execute(body.decode(), b"", params)

    def _execute(self, sql: str, data: bytes, params: dict[str, list[str]]) -> None:
        owner = self.owner
        owner.requests.append(
            {"sql": sql[:4000], "bytes": len(data), "chunked": self.headers.get("Transfer-Encoding", ""),
             "user": self.headers.get("X-ClickHouse-User", ""),
             "key": self.headers.get("X-ClickHouse-Key", ""),
             "authorization": self.headers.get("Authorization", "")}
        )
        insert = _INSERT.match(sql)
        try:
            if insert:
                if owner.fail_inserts:
                    raise RuntimeError("Code: 242. DB::Exception: Table is in readonly mode (test)")
                path = os.path.join(owner.tmpdir, f"{uuid.uuid4()}.bin")
                with open(path, "wb") as f:
                    f.write(data)
                try:
                    if owner.max_insert_rows is not None:
                        with owner.lock:
                            rows = int(owner.writer.query(
                                f"SELECT count() FROM file('{path}', '{insert.group('fmt')}')", "TSV").bytes())
                        if rows > owner.max_insert_rows:
                            raise RuntimeError(
                                "Code: 241. DB::Exception: Memory limit (for query) exceeded: would use "
                                f"{rows} rows' worth, maximum: {owner.max_insert_rows} (test). "
                                "(MEMORY_LIMIT_EXCEEDED)")
                        owner.inserted_rows.append(rows)
                    cols = insert.group("cols") or ""
                    # the insert's deduplication settings, as a server applies them from the URL
                    settings = ", ".join(f"{k} = '{params[k][0]}'" for k in _INSERT_SETTINGS if k in params
                                         and re.fullmatch(r"[\w-]*", params[k][0]))
                    stmt = (
                        f"INSERT INTO {insert.group('table')} {cols} "
                        + (f"SETTINGS {settings} " if settings else "")
                        + f"SELECT * FROM file('{path}', '{insert.group('fmt')}')"
                    )
                    with owner.lock:
                        owner.writer.query(stmt)
                finally:
                    os.unlink(path)
                if owner.hold_insert_replies:
                    owner.replies_released.wait(60)
                if owner.lose_insert_replies:
                    raise RuntimeError("Code: 209. DB::NetException: Timeout exceeded while writing the reply (test)")
                self._reply(200, b"", summary={"written_rows": "1"})
                return
            match = _FORMAT.search(sql)
            fmt = match.group(1) if match else params.get("default_format", ["TabSeparated"])[0]
            readonly = params.get("readonly", ["0"])[0] not in ("0", "")
            conn = owner.reader if readonly else owner.writer
            with owner.lock:
                result = conn.query(sql, fmt)
            self._reply(200, result.bytes(), fmt)
        except Exception as exc:
            message = str(exc).strip()
            if not message.startswith("Code:"):
                message = f"Code: 1000. DB::Exception: {message}"
            self._reply(500, message.encode())
