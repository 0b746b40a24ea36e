"""Work taken off the application's call path.

The call path only makes the span current (a placeholder, ``_spans``), timestamps, and keeps
references to the request and response. Everything else — the SDK span, parsing JSON and streams, span
attributes, ending the span at its recorded end time, metrics, events — runs here, on one daemon
thread per instrumentor. One thread keeps each call's work in order (a stream's batches, then
its end).

The thread works in batches: every ``BATCH_INTERVAL_S`` it runs the calls queued since its last
look. Waking a thread per call costs more than the call's telemetry: every hand-off is a futex
wake-up plus two GIL transfers, and the application's thread waits for the GIL at each
(measured in ``bench/BENCHMARKS.md``). So while calls keep coming the call path wakes nothing:
it appends to a deque, and the thread finds the calls at its next look. After ``IDLE_POLLS``
looks in a row find nothing (a second with no LLM call), the thread sleeps until a call wakes it,
so an idle process has no thread waking up 20 times a second; only that first call pays for a
wake-up. Spans
keep the timestamps taken on the call path; only their export is later, which a
``BatchSpanProcessor`` delays by seconds anyway. A long batch gives the GIL away for a moment
after every ``SLICE_S`` of work, so a waiting application thread is not held up by all of it.

Nothing is lost at flush or exit: ``drain()`` runs the queue at once and waits for it, and it
runs before any SDK ``TracerProvider`` / ``MeterProvider`` / ``LoggerProvider`` ``force_flush``
or ``shutdown`` (the instrumentor wraps those) and at interpreter exit. When the application
makes calls faster than the thread keeps up, a caller waits for the queue to go down
(back-pressure) rather than letting memory grow. ``defer=False`` (or ``LQO_GENAI_DEFER=false``)
does the work inline instead.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from time import perf_counter, sleep
from typing import Any

DEFER_ENV = "LQO_GENAI_DEFER"
# Calls queued before a caller waits; each holds its request and response bytes.
MAX_PENDING = 2048
# How often the thread looks for queued calls while there are any.
BATCH_INTERVAL_S = 0.05
# Looks in a row that find nothing before the thread sleeps until a call wakes it (1 s).
IDLE_POLLS = 20
# A batch gives the GIL away after each slice of this much work, for this long, so that an
# application thread waiting for it is held up by one slice, not by the whole batch (CPython
# hands a waiting thread the GIL only after the 5 ms switch interval otherwise).
SLICE_S = 0.001
YIELD_S = 0.00005

_Item = tuple[Callable[..., None], tuple[Any, ...]]


def defer_from_env() -> bool:
    return os.environ.get(DEFER_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


class Worker:
    def __init__(self, on_error: Callable[[str, BaseException], None], deferred: bool = True,
                 interval: float = BATCH_INTERVAL_S) -> None:
        self.deferred = deferred
        self.interval = interval
        self._on_error = on_error
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._reset()

    def _reset(self) -> None:
        # deque.append / popleft are atomic: the call path takes no lock.
        self._items: collections.deque[_Item | None] = collections.deque()
        self._wake = threading.Event()  # set: the sleeping thread has work again
        self._hurry = threading.Event()  # set: someone waits, run now instead of gathering
        self._asleep = False  # the thread waits for _wake, not for its next look: the call path sets it
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs ``fn(*args)`` on the worker thread (inline when not deferred); never raises."""
        if not self.deferred or self._stopped:
            self._run(fn, args)
            return
        if self._thread is None:
            self._start()
        items = self._items
        items.append((fn, args))
        if len(items) > MAX_PENDING:
            self.drain(timeout=5.0)
        elif self._asleep:
            self._asleep = False
            self._wake.set()

    def drain(self, timeout: float | None = None) -> bool:
        """Runs everything submitted so far and waits for it; False on timeout."""
        thread = self._thread
        if thread is None or not self.deferred:
            return True
        if thread is threading.current_thread():  # a span processor flushing from our own thread
            return True
        if not thread.is_alive():  # forked child, or the interpreter is going down: run here
            self._run_pending()
            return True
        done = threading.Event()
        self._items.append((done.set, ()))
        self._hurry.set()
        self._asleep = False
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Drains, then ends the thread; later submissions run inline."""
        self.drain(timeout)
        self._stopped = True
        if self._thread is not None and self._thread.is_alive():
            self._items.append(None)
            self._hurry.set()
            self._wake.set()

    def after_fork(self) -> None:
        """In a forked child the thread is gone and the queue belongs to the parent's calls."""
        self._thread = None
        self._reset()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name="lqo-genai-telemetry", daemon=True)
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        items, wake, hurry = self._items, self._wake, self._hurry
        idle = 0
        while True:
            if self._asleep:
                wake.wait()
                wake.clear()
            hurry.wait(self.interval)  # let the batch gather
            hurry.clear()
            if not items:
                idle += 1
                if idle >= IDLE_POLLS:
                    self._asleep = True
                    # A call queued after the look above saw _asleep still False and woke nothing:
                    # look once more now that the call path would wake us.
                    if items:
                        self._asleep = False
                continue
            idle = 0
            slice_end = perf_counter() + SLICE_S
            while items:
                item = items.popleft()
                if item is None:
                    return
                self._run(*item)
                if perf_counter() > slice_end:
                    sleep(YIELD_S)
                    slice_end = perf_counter() + SLICE_S

    def _run_pending(self) -> None:
        items = self._items
        while items:
            item = items.popleft()
            if item is not None:
                self._run(*item)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._on_error("deferred", exc)
