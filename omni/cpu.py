"""How much of the machine other processes are using: the language model picks its thread count from it.

llama.cpp's threads wait for each other at every step; with as many threads as cores, one thread pre-empted by
another process stalls them all. Measured here (1.5B model, 2 cores): 2 threads 27.5 tokens/s quiet but 7.6 next to
one busy process at normal priority; 1 thread 19.3 quiet and 20.3 next to it. A browser playing the page takes
50-100 % of a core all the time, so a local launch is always in the second case.
"""

from __future__ import annotations

import threading
import time

import psutil


class CpuWatch:
    """Samples, every INTERVAL_S in a daemon thread, the cores used by every process but this one."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.others = 0.0  # cores busy with other processes over the last interval
        self._me = psutil.Process()
        threading.Thread(target=self._run, name="cpu-watch", daemon=True).start()

    def _busy(self) -> tuple[float, float]:
        total = psutil.cpu_times()
        mine = self._me.cpu_times()
        return total.user + total.nice + total.system + getattr(total, "irq", 0.0) + getattr(
            total, "softirq", 0.0
        ), mine.user + mine.system

    def _run(self) -> None:
        busy, mine = self._busy()
        then = time.monotonic()
        while True:
            time.sleep(self.interval_s)
            now_busy, now_mine = self._busy()
            now = time.monotonic()
            self.others = max(0.0, (now_busy - busy) - (now_mine - mine)) / (now - then)
            busy, mine, then = now_busy, now_mine, now


_watch: CpuWatch | None = None
_lock = threading.Lock()


def others_busy() -> float:
    """Cores other processes kept busy over the last half second (the watch starts on the first call)."""
    global _watch
    with _lock:
        if _watch is None:
            _watch = CpuWatch()
    return _watch.others
