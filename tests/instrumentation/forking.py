"""Running a function in a forked child of the test process."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_forked_child(fn: Callable[[], str]) -> str:
    """Forks; the child runs ``fn`` and exits at once (no atexit handlers, no pytest teardown).
    Returns what ``fn`` returned; fails the test if the child failed."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write, fn().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    out = os.read(read, 4096)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, "the forked child failed"
    return out.decode()
