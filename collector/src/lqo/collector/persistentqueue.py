"""An exporter's sending queue kept on disk, so that spans waiting for a store survive a restart.

The OpenTelemetry Collector's persistent queue (``sending_queue.storage``), for span batches:
every batch an exporter is handed is written to a file of its own (Arrow IPC, written under a
temporary name and renamed, so a file is either whole or absent) before the producer goes on;
the sender reads files back in order and deletes each only once it is written to the store or
given up on. A collector stopped while the store is down — or killed — finds the files at its
next start and sends them first.

Each insert is stored once, even when it is sent again: before the first try, the files it is
made of, its token (``SpanBatch.insert_token``, ClickHouse's ``insert_deduplication_token``)
and how many rows go in each insert are written to ``sending.json``, which goes after the files once the store has the insert. A
start that finds it sends those files first, together and cut into inserts as before, with the
same tokens, so a
store that had them already (the kill came between the insert and the files' removal) stores
nothing again; where some of them are gone already (the kill came during the removal), the
store had them, and the rest go too. Only an insert that mixes in batches kept in memory (their
files could not be written) has no such record: its files may then be stored twice.

Room is bounded as in memory (``queue_size`` spans, ``max_bytes`` decoded bytes); memory holds
only the batches being sent. A batch that cannot be written (disk full, read-only) stays in
memory instead, counted against the same bounds, and the failure is logged at most once a minute.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.telemetry import LogEvery, SelfTelemetry

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{20})-(\d+)-(\d+)\.arrow$")
_UNREADABLE_DIR = "unreadable"
_SENDING = "sending.json"  # the insert in progress: its files and its token
WRITE_FAILURE_LOG_INTERVAL_S = 60.0

Compression = Literal["none", "lz4", "zstd"]


@dataclass(frozen=True)
class _Segment:
    """A batch that waits on disk: its file, and what it counts against the queue's bounds."""

    path: Path
    spans: int
    approx_bytes: int

    def __len__(self) -> int:
        return self.spans


class QueueDirectoryInUse(OSError):
    """Another running collector holds the directory's lock."""


class PersistentBatchQueue(BoundedBatchQueue):
    def __init__(
        self,
        name: str,
        max_spans: int,
        max_bytes: int,
        telemetry: SelfTelemetry,
        directory: Path,
        exporter_id: str,
        fsync: bool = False,
        compression: Compression = "none",
    ) -> None:
        super().__init__(name, max_spans, max_bytes, telemetry)
        self.directory = directory
        self.fsync = fsync
        self._options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        self._unreadable = telemetry.exporter_send_failed.labels(exporter_id, "unreadable")
        self._seq = itertools.count()
        self._lock_fd: int | None = None
        self._taken: list[_Segment] = []
        self._taken_memory = False  # the last take() returned a batch kept in memory (no file)
        self._replay: tuple[list[str], str, int] | None = None  # (files, token, rows) an earlier run was sending
        self._sending = directory / _SENDING
        self._write_failures = LogEvery(WRITE_FAILURE_LOG_INTERVAL_S)
        self._record_failures = LogEvery(WRITE_FAILURE_LOG_INTERVAL_S)

    # -- start and stop ---------------------------------------------------------------------

    def open(self) -> None:
        self._lock_fd = lock_directory(self.directory, f"{self.name}: the queue directory")
        found: list[tuple[int, _Segment]] = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".tmp"):  # a write a stop or a kill interrupted: never admitted
                os.unlink(entry.path)
            elif match := _FILE.match(entry.name):
                seq, spans, nbytes = (int(g) for g in match.groups())
                found.append((seq, _Segment(Path(entry.path), spans, nbytes)))
        found.sort(key=lambda pair: pair[0])
        self._seq = itertools.count(found[-1][0] + 1 if found else 0)
        segments = self._resume([segment for _, segment in found])
        with self._cond:
            for segment in segments:
                self._reserve(segment)  # type: ignore[arg-type]  # counted as a batch: len(), approx_bytes
                self._items.append(segment)
            self._fixed_head = len(self._replay[0]) if self._replay else 0
        if segments:
            log.info("%s: %d spans in %d batches queued on disk by an earlier run; sending them first",
                     self.name, sum(s.spans for s in segments), len(segments))

    def _resume(self, segments: list[_Segment]) -> list[_Segment]:
        """The files to send, in order, after what an earlier run was sending when it stopped
        (``sending.json``): those files first, to go again as they went (``_replay``); none of
        them if some are gone already (the store had the insert: the rest go too)."""
        try:
            record = json.loads(self._sending.read_text(encoding="utf-8"))
            names, token, rows = [str(n) for n in record["files"]], str(record["token"]), int(record["rows"])
            if rows < 1:
                raise ValueError(f"rows {rows}")
        except FileNotFoundError:
            return segments
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: %s does not read back (%s); its files are sent again with a new token, "
                        "and may be stored twice", self.name, self._sending, exc)
            self._sending.unlink(missing_ok=True)
            return segments
        by_name = {segment.path.name: segment for segment in segments}
        there = [by_name[name] for name in names if name in by_name]
        recorded = set(names)
        rest = [segment for segment in segments if segment.path.name not in recorded]
        if names and len(there) == len(names):
            self._replay = (names, token, rows)
            return there + rest
        for segment in there:  # the insert went through; its files' removal was cut short
            segment.path.unlink(missing_ok=True)
        self._sending.unlink(missing_ok=True)
        if there:
            log.info("%s: %d spans on disk were stored already (the last run stopped while removing "
                     "their files); removed", self.name, sum(s.spans for s in there))
        return rest

    def abandon(self) -> int:
        items = self.drain()
        kept = sum(len(item) for item in items if isinstance(item, _Segment))
        lost = sum(len(item) for item in items if not isinstance(item, _Segment))
        kept += sum(s.spans for s in self._taken)  # taken but neither written nor given up on
        if kept:
            log.warning("%s: %d spans stay queued on disk in %s for the next start", self.name, kept, self.directory)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        return lost

    # -- the queue's storage ----------------------------------------------------------------

    def _store(self, batch: SpanBatch) -> Any:
        path = self.directory / f"{next(self._seq):020d}-{len(batch)}-{batch.approx_bytes}.arrow"
        # One record batch per file: a gathered batch is many small chunks, and each chunk's
        # buffers would be compressed, written and read back one by one (2.4 against 1.4 µs per
        # span, bench/BENCHMARKS.md).
        try:
            write_arrow(path, batch.table.combine_chunks(), self._options, self.fsync)
        except OSError as exc:
            self._write_failed(exc)
            return batch  # kept in memory: nothing is lost while the collector runs
        return _Segment(path, len(batch), batch.approx_bytes)

    def _write_failed(self, exc: OSError) -> None:
        if not (count := self._write_failures.tally()):
            return
        log.error("%s: could not write %d batch(es) to %s (%s); kept in memory, where a restart loses them",
                  self.name, count, self.directory, exc.strerror or exc)

    def _load(self, item: Any) -> SpanBatch | None:
        if not isinstance(item, _Segment):
            self._taken_memory = True
            return item  # type: ignore[no-any-return]
        try:
            table = read_arrow(item.path, SCHEMA, item.spans)
        except (OSError, pa.ArrowException, ValueError) as exc:
            self._set_aside(item, exc)
            return None
        self._taken.append(item)
        return SpanBatch(table, item.approx_bytes)

    def _set_aside(self, item: _Segment, exc: Exception) -> None:
        """A file that does not read back: set aside (``set_aside``), its spans counted as failed."""
        aside = set_aside(item.path, self.name, self.max_bytes)
        self._unreadable.inc(item.spans)
        log.error("%s: dropped %d spans: %s does not read back (%s); moved to %s",
                  self.name, item.spans, item.path.name, exc, aside)

    def begin(self, max_rows: int) -> tuple[str, int]:
        """As in memory; recorded with the files before the first try."""
        names = [segment.path.name for segment in self._taken]
        replay, self._replay = self._replay, None
        if replay is not None and replay[0] == names and not self._taken_memory:
            return replay[1], replay[2]  # as the earlier run sent it (sending.json is there still)
        token, rows = super().begin(max_rows)
        if not names or self._taken_memory:  # no record: its batches in memory would not be in it
            self._sending.unlink(missing_ok=True)
            return token, rows
        try:
            write_file(self._sending, json.dumps({"files": names, "token": token, "rows": rows}).encode(),
                       self.fsync)
        except OSError as exc:
            self._sending.unlink(missing_ok=True)
            if count := self._record_failures.tally():
                log.error("%s: could not record %d insert(s) in %s (%s); a restart during one may "
                          "store its spans twice", self.name, count, self._sending, exc.strerror or exc)
        return token, rows

    def commit(self) -> None:
        for segment in self._taken:
            segment.path.unlink(missing_ok=True)
        if self._taken:  # after the files: see the module doc
            self._sending.unlink(missing_ok=True)
        self._taken.clear()
        self._taken_memory = False


def lock_directory(directory: Path, what: str) -> int:
    """Creates ``directory`` and holds an exclusive lock on it for this process's lifetime (or
    until the returned descriptor is closed); ``what`` names it in the error."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QueueDirectoryInUse(
            f"{what} {directory} is in use by another running collector; give each collector a "
            "file_storage directory of its own"
        ) from None
    return fd


def write_arrow(path: Path, table: pa.Table, options: pa.ipc.IpcWriteOptions, fsync: bool) -> None:
    """``table`` as an Arrow IPC file at ``path``, whole or not at all: written under a temporary
    name (``.tmp``, which a start removes) and renamed. Raises OSError."""
    def write(temporary: Path) -> None:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)

    _write_whole(path, write, fsync)


def write_file(path: Path, data: bytes, fsync: bool) -> None:
    """``data`` at ``path``, whole or not at all (as ``write_arrow``). Raises OSError."""
    _write_whole(path, lambda temporary: temporary.write_bytes(data), fsync)


def _write_whole(path: Path, write: Callable[[Path], object], fsync: bool) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        if fsync:
            _fsync(temporary)
        os.replace(temporary, path)
        if fsync:
            _fsync(path.parent)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def read_arrow(path: Path, schema: pa.Schema, rows: int) -> pa.Table:
    """A file ``write_arrow`` wrote, checked to hold ``rows`` rows of ``schema``. Raises OSError,
    pa.ArrowException or ValueError (a damaged file, or another version's)."""
    # Memory-mapped: an uncompressed file is read without a copy (the page cache has it).
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    if not table.schema.equals(schema) or table.num_rows != rows:
        raise ValueError("not written by this collector version")
    # Offsets and UTF-8 checked (~0.2 µs per span): a bit flipped on disk must not reach the
    # store's reader, where it could crash the collector at every start.
    table.validate(full=True)
    return table


def set_aside(path: Path, name: str, max_bytes: int) -> Path:
    """Moves a file that does not read back (damaged on disk, written by another version) to
    ``unreadable/`` beside it, for a person to look at; returns that folder. The folder keeps the
    newest files within ``max_bytes`` (a failing disk, or a whole queue of another version's
    files, must not fill the volume)."""
    aside = path.parent / _UNREADABLE_DIR
    try:
        aside.mkdir(exist_ok=True)
        os.replace(path, aside / path.name)
    except OSError:
        path.unlink(missing_ok=True)
    trim_aside(aside, name, max_bytes)
    return aside


def trim_aside(aside: Path, name: str, max_bytes: int) -> None:
    """Keeps the newest files of a set-aside folder within ``max_bytes`` (the newest always)."""
    try:
        files = sorted(aside.glob("*.arrow"), reverse=True)  # named by sequence: newest first
        kept = 0
        for i, old in enumerate(files):
            kept += old.stat().st_size
            if i and kept > max_bytes:
                old.unlink(missing_ok=True)
                log.warning("%s: removed %s from %s: it holds at most max_bytes (%d) of files",
                            name, old.name, aside, max_bytes)
    except OSError as exc:
        log.warning("%s: could not trim %s: %s", name, aside, exc)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
