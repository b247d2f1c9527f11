"""A memory timeline of the operator under `bench/operator_scale.py`: with this folder
on PYTHONPATH and KUBETUNE_CENSUS set to a path, the operator process (and no other)
appends a line every 2 s to PATH.PID: RSS and its peak, glibc's heap (`brk`, `mmap`,
in use, free; the rest of RSS is mostly Python's own arenas and the shared
libraries), and every 10 s the 25 most numerous object types. docs/performance.md
reads Kopf's queued events and per-object memories from these counts.

    PYTHONPATH=bench/census KUBETUNE_CENSUS=/tmp/census \\
        .venv/bin/python bench/operator_scale.py --n 5000 --peer-config
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import sys
import threading
import time

PERIOD = 2.0
TYPES_EVERY = 5  # periods


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def status_mb(text: str, field: str) -> int:
    return int(text.split(f"{field}:")[1].split()[0]) // 1024


def census(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    start = time.monotonic()
    with open(f"{path}.{os.getpid()}", "w", buffering=1) as out:
        for tick in range(sys.maxsize):
            time.sleep(PERIOD)
            with open("/proc/self/status") as f:
                status = f.read()
            heap = libc.mallinfo2()
            line = (
                f"t={time.monotonic() - start:.0f} rss={status_mb(status, 'VmRSS')} "
                f"hwm={status_mb(status, 'VmHWM')} brk={heap.arena >> 20} "
                f"mmap={heap.hblkhd >> 20} inuse={heap.uordblks >> 20} "
                f"free={heap.fordblks >> 20}"
            )
            if tick % TYPES_EVERY == 0:
                types = collections.Counter(type(o).__name__ for o in gc.get_objects())
                line += " " + " ".join(f"{k}={v}" for k, v in types.most_common(25))
            out.write(line + "\n")


def watch() -> None:
    """Once the interpreter has set sys.argv: census the operator, not other processes."""
    time.sleep(0.5)
    if sys.argv[0].endswith(os.path.join("kubetune", "__main__.py")) and "run" in sys.argv[1:2]:
        census(os.environ["KUBETUNE_CENSUS"])


if os.environ.get("KUBETUNE_CENSUS"):
    threading.Thread(target=watch, daemon=True).start()
