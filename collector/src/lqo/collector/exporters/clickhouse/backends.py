"""Where ClickHouse runs: in-process (chdb, ``embedded://PATH``) or a server
(clickhouse-connect, ``http(s)://host:8123``). Both take Arrow tables for inserts and
answer read-only queries in any ClickHouse output format.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Protocol
from urllib.parse import urlsplit

import pyarrow as pa

from lqo.collector.exporters.clickhouse.schema import quote_ident

# ClickHouse error codes that mean "this data/statement can never succeed as sent".
_PERMANENT_CODES = frozenset(
    {6, 27, 32, 36, 38, 41, 43, 44, 47, 53, 62, 69, 70, 72, 117, 130, 131, 241, 344, 386}
)
# ... and those that mean "not this much at once": MEMORY_LIMIT_EXCEEDED (an insert's blocks and
# its materialized views over the server's or the query's memory limit).
_TOO_LARGE_CODES = frozenset({241})
_CODE = re.compile(r"Code:\s*(\d+)")
# A proxy in front of the server (nginx's client_max_body_size, a load balancer) refusing the body.
_HTTP_413 = re.compile(r"\bHTTP status 413\b")


class StoreError(Exception):
    def __init__(self, message: str, *, permanent: bool, too_large: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.too_large = too_large  # smaller inserts of the same rows may succeed


def _classify(exc: BaseException, context: str) -> StoreError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = _CODE.search(text)
    code = int(match.group(1)) if match else None
    too_large = code in _TOO_LARGE_CODES or bool(_HTTP_413.search(text))
    permanent = code in _PERMANENT_CODES
    return StoreError(f"{context}: {text[:500]}", permanent=permanent, too_large=too_large)


def literal(value: str) -> str:
    """A ClickHouse string literal: backslashes and quotes escaped, nothing else interpreted."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _setting(value: int | str) -> str:
    """A setting's value in a SETTINGS clause: a number, or a quoted string."""
    return literal(value) if isinstance(value, str) else str(int(value))


class Backend(Protocol):
    description: str

    def execute(self, sql: str) -> None: ...
    def insert_arrow(
        self, database: str, table: str, data: pa.Table, settings: dict[str, int | str]
    ) -> None: ...
    def query(self, sql: str, fmt: str) -> bytes: ...
    def close(self) -> None: ...


class ChdbBackend:
    """ClickHouse in this process. chdb allows one store path per process; writes and
    reads use separate connections, the reader locked to ``readonly = 1``."""

    def __init__(self, path: str) -> None:
        import chdb

        self.path = os.path.abspath(path)
        self.description = f"embedded ClickHouse at {self.path}"
        try:
            os.makedirs(self.path, exist_ok=True)
            self._writer = chdb.connect(self.path)
            self._reader = chdb.connect(self.path)
            self._reader.query("SET readonly = 1")
        except Exception as exc:
            raise StoreError(
                f"cannot open embedded store {self.path}: {exc}. Another process may hold "
                "it: stop it, or query through the running collector (lqo query does this)",
                permanent=True,
            ) from None
        self._lock = threading.Lock()

    def execute(self, sql: str) -> None:
        with self._lock:
            try:
                self._writer.query(sql)
            except Exception as exc:
                raise _classify(exc, "embedded ClickHouse") from None

    def insert_arrow(
        self, database: str, table: str, data: pa.Table, settings: dict[str, int | str]
    ) -> None:
        columns = ", ".join(quote_ident(c) for c in data.column_names)
        clause = ", ".join(f"{k} = {_setting(v)}" for k, v in settings.items())
        sql = (
            f"INSERT INTO {quote_ident(database)}.{quote_ident(table)} ({columns}) "
            + (f"SETTINGS {clause} " if clause else "")
            + "SELECT * FROM Python(data)"
        )
        with self._lock:
            try:
                self._writer.query(sql)
            except Exception as exc:
                raise _classify(exc, "embedded ClickHouse insert") from None

    def query(self, sql: str, fmt: str) -> bytes:
        with self._lock:
            try:
                return self._reader.query(sql, fmt).bytes()
            except Exception as exc:
                raise _classify(exc, "query") from None

    def close(self) -> None:
        with self._lock:
            for conn in (self._reader, self._writer):
                try:
                    conn.close()
                except Exception:  # already closed by chdb at interpreter exit
                    pass


class ServerBackend:
    """A ClickHouse server (or cluster node) over its HTTP interface."""

    def __init__(
        self, endpoint: str, username: str, password: str, timeout: float, compress: bool
    ) -> None:
        import clickhouse_connect

        parts = urlsplit(endpoint)
        secure = parts.scheme == "https"
        self.description = f"ClickHouse server {parts.scheme}://{parts.hostname}:{parts.port or (8443 if secure else 8123)}"
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if secure else 8123),
                username=username or "default",
                password=password,
                secure=secure,
                connect_timeout=min(timeout, 10),
                send_receive_timeout=timeout,
                compress=compress,
                autogenerate_session_id=False,
            )
        except Exception as exc:
            raise _classify(exc, f"cannot connect to {self.description}") from None

    def execute(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except Exception as exc:
            raise _classify(exc, self.description) from None

    def insert_arrow(
        self, database: str, table: str, data: pa.Table, settings: dict[str, int | str]
    ) -> None:
        try:
            self._client.insert_arrow(table, data, database=database, settings=settings)
        except Exception as exc:
            raise _classify(exc, f"{self.description} insert") from None

    def query(self, sql: str, fmt: str) -> bytes:
        try:
            return self._client.raw_query(sql, fmt=fmt, settings={"readonly": 1})
        except Exception as exc:
            raise _classify(exc, "query") from None

    def close(self) -> None:
        self._client.close()


def open_backend(
    endpoint: str, username: str = "", password: str = "", timeout: float = 30.0,
    compress: bool = True,
) -> Backend:
    if endpoint.startswith("embedded://"):
        return ChdbBackend(endpoint.removeprefix("embedded://"))
    return ServerBackend(endpoint, username, password, timeout, compress)
