"""Work taken off the application's call path.

The call path only starts the span, timestamps, and keeps references to the request and
response bytes. Everything else — parsing JSON and streams, span attributes, ending the span at
its recorded end time, metrics, events — runs here, on one daemon thread per instrumentor, while
the application waits on its next I/O. One thread keeps each call's work in order (a stream's
batches, then its end).

Nothing is lost at flush or exit: ``drain()`` waits for the queue, and it runs before any SDK
``TracerProvider`` / ``MeterProvider`` / ``LoggerProvider`` ``force_flush`` or ``shutdown`` (the
instrumentor wraps those) and at interpreter exit. When the application makes calls faster than
the thread keeps up, a caller waits for the queue to go down (back-pressure) rather than letting
memory grow. ``defer=False`` (or ``LQO_GENAI_DEFER=false``) does the work inline instead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

DEFER_ENV = "LQO_GENAI_DEFER"
# Calls queued before a caller waits; each holds its request and response bytes.
MAX_PENDING = 2048


def defer_from_env() -> bool:
    return os.environ.get(DEFER_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


class Worker:
    def __init__(self, on_error: Callable[[str, BaseException], None], deferred: bool = True) -> None:
        self.deferred = deferred
        self._on_error = on_error
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs ``fn(*args)`` on the worker thread (inline when not deferred); never raises."""
        if not self.deferred or self._stopped:
            self._run(fn, args)
            return
        if self._thread is None:
            self._start()
        elif self._queue.qsize() > MAX_PENDING:
            self.drain(timeout=5.0)
        self._queue.put((fn, args))

    def drain(self, timeout: float | None = None) -> bool:
        """Waits until everything submitted so far has run; False on timeout."""
        thread = self._thread
        if thread is None or not self.deferred:
            return True
        if thread is threading.current_thread():  # a span processor flushing from our own thread
            return True
        if not thread.is_alive():  # forked child, or the interpreter is going down: run here
            self._run_pending()
            return True
        done = threading.Event()
        self._queue.put((done.set, ()))
        return done.wait(timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Drains, then ends the thread; later submissions run inline."""
        self.drain(timeout)
        self._stopped = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)

    def after_fork(self) -> None:
        """In a forked child the thread is gone and the queue belongs to the parent's calls."""
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name="lqo-genai-telemetry", daemon=True)
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            self._run(*item)

    def _run_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._run(*item)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._on_error("deferred", exc)
