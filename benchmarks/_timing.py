"""Timing shared by the benchmarks: warm up once, then interleaved rounds, keeping the best."""

from __future__ import annotations

import time


def best_time(fns: dict, rounds: int) -> tuple[dict, dict]:
    """Each function once to warm up, then ``rounds`` interleaved rounds. Returns the best wall seconds per
    function, and the CPU share of that round (this process's CPU seconds / wall seconds)."""
    for fn in fns.values():
        fn()
    best, share = dict.fromkeys(fns, float("inf")), {}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall = time.perf_counter() - t0
            if wall < best[key]:
                best[key], share[key] = wall, (time.process_time() - c0) / wall
    return best, share


def print_wall(t_start: float) -> None:
    """The closing line of a benchmark: its wall and CPU time, and the load it ran under."""
    import os

    wall = time.perf_counter() - t_start
    print(f"\nbenchmark wall time: {wall:.0f} s, CPU time {time.process_time():.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
