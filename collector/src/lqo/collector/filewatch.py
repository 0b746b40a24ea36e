"""Noticing that files changed (a rotated Secret, a renewed certificate) without watching them:
their stamps, compared at most once per interval."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any


def file_stamps(paths: Iterable[str]) -> tuple[Any, ...]:
    """Per path (inode, mtime, size), or None where it cannot be stat'ed. Kubernetes updates a
    mounted Secret by moving a symlink, which changes the inode the path leads to."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class Recheck:
    """``due()`` is True at most once per ``interval`` seconds, to one caller among threads."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:  # the common case, without the lock
            return False
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.interval
            return True
