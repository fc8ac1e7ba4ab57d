"""``timed_step``: wall time and peak memory of each pipeline stage, recorded in the report."""

import resource
import sys
import time
from contextlib import contextmanager


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


@contextmanager
def timed_step(name: str, records: list, progress=None):
    if progress:
        progress(name, "start")
    start = time.perf_counter()
    record = {"stage": name}
    try:
        yield record
    finally:
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
        records.append(record)
        if progress:
            progress(name, "end", record)
