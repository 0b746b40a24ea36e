"""Incremental parsing of streamed LLM responses (SSE, NDJSON) and byte-stream proxies.

The proxies replace ``response.stream`` (the raw byte stream under httpx/httpx2's Response), so
every SDK keeps its own types and parsing; we only watch the bytes go by, timestamp the first,
and hand them to the telemetry worker in batches, where ``StreamParser`` decodes them. A proxy
ends its call exactly once: when the stream is exhausted, raises, is closed, is
garbage-collected, or is still open when the interpreter exits.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

# One event's bytes beyond this are not parsed (a runaway stream must not grow our buffer).
MAX_EVENT_BYTES = 8 * 1024 * 1024
# A non-streamed JSON body read through a stream proxy (raw-response mode) is parsed up to this.
MAX_BODY_BYTES = 16 * 1024 * 1024


def make_decompressor(content_encoding: str) -> Any:
    """A zlib decompressor for gzip/deflate, ``None`` for identity, ``False`` if unsupported."""
    encoding = content_encoding.strip().lower()
    if not encoding or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return False


class StreamParser:
    """Feeds raw body bytes; calls ``on_event(event_name, data)`` for each complete message.

    ``kind`` is ``sse`` (``event:``/``data:`` blocks), ``ndjson`` (one JSON object per line),
    ``eventstream`` (AWS's binary event stream: each event's type and JSON payload, an exception
    as ``EXCEPTION + <type>``) or ``json`` (one document, delivered at ``close``).
    ``skip(event_name, payload)``, when given, is asked before an event's JSON is decoded: True means it carries nothing the caller needs (a
    content delta with content capture off), and it is not decoded, which is most of a stream's
    cost here. ``quiet()``, when given, may return a pattern: until the first match, every
    complete message in the bytes fed would be skipped, and they are passed over in one search
    instead of one by one. The search starts at the separator before a message (the first
    message of each feed is handled on its own), so a pattern can match a message's start.
    ``run(buf, start, end)``, when given, is asked before each message is handled: it may read
    a run of messages from ``start`` (complete ones, before ``end``) straight from the bytes,
    and returns where it stopped, ``start`` if it read none.
    """

    __slots__ = ("_buf", "_decomp", "_kind", "_on_event", "_overflow", "_quiet", "_run", "_skip", "broken",
                 "events")

    def __init__(self, kind: str, content_encoding: str, on_event: Callable[[str, Any], None],
                 skip: Callable[[str, bytes], bool] | None = None,
                 quiet: Callable[[], re.Pattern[bytes] | None] | None = None,
                 run: Callable[[bytes, int, int], int] | None = None) -> None:
        self._kind = kind
        self._on_event = on_event
        self._skip = skip
        self._quiet = quiet
        self._run = run
        self._buf = b""
        self._overflow = False
        self.events = 0
        decomp = make_decompressor(content_encoding)
        self.broken = decomp is False  # unknown encoding: pass bytes through, parse nothing
        self._decomp = decomp or None

    def feed(self, chunk: bytes) -> None:
        if self.broken or not chunk:
            return
        if self._decomp is not None:
            chunk = self._decomp.decompress(chunk)
        buf = self._buf + chunk if self._buf else chunk
        if self._kind == "sse":
            self._buf = self._split(buf, b"\n\n", self._sse_event)
        elif self._kind == "ndjson":
            self._buf = self._split(buf, b"\n", self._json_line)
        elif self._kind == "eventstream":
            self._buf = self._frames(buf)
        else:
            if len(buf) > MAX_BODY_BYTES:
                self.broken = True
                buf = b""
            self._buf = buf

    def close(self) -> None:
        if self.broken:
            return
        buf = self._buf
        self._buf = b""
        if self._decomp is not None:
            buf += self._decomp.flush()
        if not buf.strip():
            return
        if self._kind == "sse":
            self._sse_event(buf)
        elif self._kind != "eventstream":  # (an event stream's cut frame has nothing to give)
            self._json_line(buf)

    def _split(self, buf: bytes, sep: bytes, handle: Callable[[bytes], None]) -> bytes:
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        quiet, run = self._quiet, self._run
        start, size = 0, len(sep)
        last = buf.rfind(sep)  # the end of the last complete message; after it, kept for the next feed
        while start <= last:
            # Asked again after each message handled: handling may change it.
            pattern = quiet() if quiet is not None else None
            if pattern is not None and start > 0:  # pass over messages before the first that may matter
                # From the separator before ``start``: a pattern may match at a message's start.
                found = pattern.search(buf, start - size, last)
                if found is None:
                    start = last + size
                    break
                cut = buf.rfind(sep, start, found.start())
                if cut >= 0:
                    start = cut + size
            if run is not None:
                moved = run(buf, start, last + size)
                if moved != start:  # a run read from the bytes; the next may start a run too
                    start = moved
                    continue
            end = buf.find(sep, start)
            handle(buf[start:end])
            start = end + size
        rest = buf[start:]
        if len(rest) > MAX_EVENT_BYTES:
            # Not a stream we understand; stop parsing rather than buffer without bound.
            self.broken = True
            return b""
        return rest

    def _frames(self, buf: bytes) -> bytes:
        """AWS event stream frames: a prelude (total length, headers length, its CRC-32), the
        headers, the payload, the frame's CRC-32. A frame that does not check out stops the
        parse (the bytes still go to the application, which fails on them the same way)."""
        pos, size = 0, len(buf)
        while size - pos >= 16:
            total, head_len, prelude_crc = struct.unpack_from(">III", buf, pos)
            if (total < 16 + head_len or total > MAX_EVENT_BYTES
                    or zlib.crc32(buf[pos:pos + 8]) != prelude_crc):
                self.broken = True
                return b""
            end = pos + total
            if end > size:
                break
            headers = _frame_headers(buf, pos + 12, pos + 12 + head_len)
            if headers is None or zlib.crc32(buf[pos:end - 4]) != int.from_bytes(buf[end - 4:end], "big"):
                self.broken = True
                return b""
            self._frame(headers, buf[pos + 12 + head_len:end - 4])
            pos = end
        return buf[pos:]

    def _frame(self, headers: dict[str, str], payload: bytes) -> None:
        kind = headers.get(":message-type")
        if kind == "event":
            name = headers.get(":event-type", "")
        elif kind in ("exception", "error"):
            name = EXCEPTION + (headers.get(":exception-type") or headers.get(":error-code") or "error")
        else:
            return
        try:
            data = json.loads(payload) if payload.strip() else {}
        except ValueError:
            data = {}
        self.events += 1
        self._on_event(name, data)

    def _json_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        if self._skip is not None and self._skip("", line):
            return
        try:
            data = json.loads(line)
        except ValueError:
            return
        self.events += 1
        self._on_event("", data)

    def _sse_event(self, block: bytes) -> None:
        event = ""
        if block.startswith(b"data:") and b"\n" not in block:  # the usual block: one data line
            payload = block[5:].lstrip(b" ")
        else:
            data_lines = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode("utf-8", "replace")
            if not data_lines:
                return
            payload = b"\n".join(data_lines)
        if payload == b"[DONE]":
            return
        if self._skip is not None and self._skip(event, payload):
            return
        try:
            data = json.loads(payload)
        except ValueError:
            return
        self.events += 1
        self._on_event(event, data)


# The event name an AWS event stream's exception frame is given under: this, then its type.
EXCEPTION = ":exception:"
# Sizes of AWS event stream header values by type; 6 and 7 (bytes, string) have a 2-byte length.
_FIXED_HEADER_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _frame_headers(buf: bytes, pos: int, end: int) -> dict[str, str] | None:
    """An event stream frame's string headers (the others skipped); None if malformed."""
    out: dict[str, str] = {}
    try:
        while pos < end:
            name_len = buf[pos]
            name = buf[pos + 1:pos + 1 + name_len]
            pos += 1 + name_len
            kind = buf[pos]
            pos += 1
            if kind in (6, 7):
                value_len = int.from_bytes(buf[pos:pos + 2], "big")
                if kind == 7:
                    out[name.decode("utf-8", "replace")] = buf[pos + 2:pos + 2 + value_len].decode("utf-8", "replace")
                pos += 2 + value_len
            else:
                pos += _FIXED_HEADER_SIZES[kind]
    except (IndexError, KeyError):
        return None
    return out if pos == end else None


# Streamed bytes are handed to the worker in batches of about this size (and at the end).
BATCH_BYTES = 64 * 1024


# Streams not yet ended, id → watch. An abandoned stream ends when its proxy is collected; one
# still referenced when the interpreter exits (a script that stopped reading and quit) is ended
# by ``end_open_streams``, which the instrumentor runs at exit before its telemetry drains.
_open: dict[int, _Watch] = {}
# A forked child inherits the parent's open streams as copies: they are the parent's calls to end.
os.register_at_fork(after_in_child=_open.clear)


def end_open_streams() -> None:
    for watch in list(_open.values()):
        try:
            watch.end(None)
        except Exception:
            pass


class _Watch:
    """The per-stream state both proxies share: first-chunk time, the pending batch, the end."""

    __slots__ = ("call", "pending", "size")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.pending: list[bytes] = []
        self.size = 0
        _open[id(self)] = self

    def add(self, chunk: bytes) -> None:
        if self.call.first_chunk is None:
            self.call.first_chunk = time.perf_counter()
        self.pending.append(chunk)
        self.size += len(chunk)
        if self.size >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.call.feed(self.pending)
            self.pending = []
            self.size = 0

    def end(self, error: BaseException | None) -> None:
        """Ends the call once, whichever of exhaustion, error, close, collection or exit is first."""
        if _open.pop(id(self), None) is None:
            return
        self.flush()
        self.call.end(error)


class _Proxy:
    """What the sync and async proxies share: construction, ``elapsed`` and the single end."""

    _watch: _Watch | None = None  # until __init__ has run: a half-made proxy has no call to end

    def __init__(self, inner: Any, call: Any) -> None:
        self._inner = inner
        self._watch = _Watch(call)

    @property
    def elapsed(self) -> Any:
        return getattr(self._inner, "elapsed", None)

    def _end(self, error: BaseException | None) -> None:
        self._watch.end(error)  # type: ignore[union-attr]

    def __del__(self) -> None:
        # An abandoned stream (dropped without close) ends its call when collected. A __del__,
        # not a weakref.finalize: that cost ~3 µs per stream to register and detach, on the
        # call path, for the rare stream nobody closes.
        watch = self._watch
        if watch is not None:
            try:
                watch.end(None)
            except Exception:  # late in interpreter shutdown: never to the application
                pass


def _sync_proxy_class(base: type) -> type:
    class SyncStreamProxy(_Proxy, base):  # type: ignore[misc, valid-type]
        """Wraps a sync byte stream; ends its call exactly once."""

        def __iter__(self) -> Any:
            watch = self._watch
            it = iter(self._inner)
            try:
                for chunk in it:  # up to the first bytes, which add() stamps
                    if chunk:
                        watch.add(chunk)
                        yield chunk
                        break
                    yield chunk
                # Then add()'s work inline: a call less per chunk, on the application's thread.
                pending, size = watch.pending, watch.size
                for chunk in it:
                    if chunk:
                        pending.append(chunk)
                        size += len(chunk)
                        if size >= BATCH_BYTES:
                            watch.flush()
                            pending, size = watch.pending, 0
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                self._end(exc)
                raise
            self._end(None)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._end(None)

    return SyncStreamProxy


def _async_proxy_class(base: type) -> type:
    class AsyncStreamProxy(_Proxy, base):  # type: ignore[misc, valid-type]
        """Wraps an async byte stream; ends its call exactly once."""

        async def __aiter__(self) -> Any:
            watch = self._watch
            it = self._inner.__aiter__()
            try:
                async for chunk in it:  # as the sync proxy's
                    if chunk:
                        watch.add(chunk)
                        yield chunk
                        break
                    yield chunk
                pending, size = watch.pending, watch.size
                async for chunk in it:
                    if chunk:
                        pending.append(chunk)
                        size += len(chunk)
                        if size >= BATCH_BYTES:
                            watch.flush()
                            pending, size = watch.pending, 0
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                self._end(exc)
                raise
            self._end(None)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._end(None)

    return AsyncStreamProxy


_proxy_classes: dict[tuple[type, bool], type] = {}


def proxy_class(base: type, is_async: bool) -> type:
    """A proxy subclassing the client library's own ByteStream base, so isinstance checks pass."""
    key = (base, is_async)
    cls = _proxy_classes.get(key)
    if cls is None:
        cls = _async_proxy_class(base) if is_async else _sync_proxy_class(base)
        _proxy_classes[key] = cls
    return cls
