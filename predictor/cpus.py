"""The CPUs this process really has: how many cores it may use, and how long a thread
waited for one.

torch sizes its pool by the machine's cores; in a pod with a CPU limit, or a process
pinned with taskset, that oversubscribes, and torch's threads then spin against each
other (seen here: x*2 on 100k floats took 3 ms with 2 threads on 1 core, 26 µs with 1).
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 cpu.max, or v1 cfs files), if any."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota_text, period_text = v2.read_text().split()[:2]
            return None if quota_text == "max" else int(quota_text) / int(period_text)
        v1 = Path("/sys/fs/cgroup/cpu,cpuacct")
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    count = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


_thread_stats = threading.local()


def run_queue_wait() -> float:
    """Seconds the calling thread has spent ready to run but waiting for a core (Linux
    schedstat; 0.0 where the kernel does not say). Precise to tens of microseconds. One
    file descriptor per thread, kept open: a read then costs about 1.5 µs."""
    fd = getattr(_thread_stats, "fd", None)
    if fd is None:
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            fd = -1
        _thread_stats.fd = fd
    if fd < 0:
        return 0.0
    try:
        return int(os.pread(fd, 64, 0).split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class CoreClock:
    """How long a call on this thread would have taken with a core to itself: wall time
    less the time spent waiting for a core, and never less than the CPU time it used.
    Waiting for anything else (a GPU, I/O, a sleep) counts. With `shared_core` false (a
    call on the event loop's own thread, which nothing of ours preempts) it is plain wall
    time, and skips the reads."""

    def __init__(self, shared_core: bool = True) -> None:
        self.shared_core = shared_core
        self.start = time.perf_counter()
        if shared_core:
            self.waited = run_queue_wait()
            self.cpu = time.thread_time()

    def elapsed(self) -> float:
        wall = time.perf_counter() - self.start
        if not self.shared_core:
            return wall
        return max(wall - (run_queue_wait() - self.waited), time.thread_time() - self.cpu)
