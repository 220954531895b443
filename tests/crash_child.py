"""Child process for tests/test_crash.py: appends batches to a log until it is killed.

Usage: crash_child.py LOG_DIR GENERATION SEED KILL_AFTER  (signing key in $CRASH_LOG_SKEY)

Prints ``READY <size>`` once the log is open, ``TRY <first> <count>`` before
each append and ``ACK <first> <count>`` after it returns, flushing each line.
With ``KILL_AFTER > 0`` it SIGKILLs itself at the KILL_AFTER-th file
operation (write, fsync, rename, unlink, mkdir, ftruncate, or the end of a
``remove_files``), so kills land between any two steps of an append or of the
recovery in ``TileLog.open``; a write chosen as the kill point is torn in half.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def entry(index: int, generation: int) -> bytes:
    """Entry ``index`` as written by child ``generation``: 50..200 bytes, unique per (index, generation)."""
    head = b"entry-%08d-g%04d-" % (index, generation)
    length = 50 + (index * 7919 + generation * 31) % 151
    pad = hashlib.sha256(head).hexdigest().encode() * 4
    return (head + pad)[:length]


def install_kill_switch(
    kill_after: int, group: bool = False, extra: Sequence[tuple[Any, str]] = ()
) -> Callable[[], int]:
    """Wrap the file operations (and the ``extra`` (owner, name) callables); SIGKILL at operation ``kill_after``.

    ``kill_after`` 0 never kills (the returned function counts the operations
    so far). With ``group`` the whole process group dies, so child processes
    (git) die with it.
    """
    from publisher import fsio

    lock = threading.Lock()
    count = 0

    def die() -> None:
        if group:
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # not reached

    def tick() -> bool:
        nonlocal count
        with lock:
            count += 1
            return count == kill_after

    def wrap(owner: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if tick():
                die()
            return real(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("fsync", "replace", "rename", "unlink", "mkdir", "ftruncate"):
        wrap(os, name)
    for owner, name in extra:
        wrap(owner, name)

    real_write = os.write

    def torn_write(fd: int, data: Any) -> int:
        if tick():
            view = memoryview(data)
            real_write(fd, view[: len(view) // 2])
            die()
        return real_write(fd, data)

    os.write = torn_write

    real_remove = fsio.remove_files

    def remove_files(*args: Any, **kwargs: Any) -> None:
        real_remove(*args, **kwargs)
        if tick():  # e.g. right after the journal is gone, before the ACK
            die()

    fsio.remove_files = remove_files
    return lambda: count


def main(argv: list[str]) -> int:
    root, generation, seed, kill_after = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    if kill_after > 0:
        install_kill_switch(kill_after)
    from publisher.tlog import TileLog
    from publisher.tlog.note import Signer

    signer = Signer.from_skey(os.environ["CRASH_LOG_SKEY"])
    rng = random.Random(seed)
    log = TileLog.open(root, signer)
    print(f"READY {log.size}", flush=True)
    while True:
        first, count = log.size, rng.randint(1, 600)
        print(f"TRY {first} {count}", flush=True)
        result = log.append([entry(i, generation) for i in range(first, first + count)])
        print(f"ACK {result.first_index} {result.size - result.first_index}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
