"""Peak memory *within* a stage, of this process and of the child processes it runs.

The process's high-water mark alone (``ru_maxrss``) made every stage after the first large one
report the same figure, and children (verification, converters) were not counted at all. A
stage's figures here:

- ``peak_rss_mb``: this process's largest resident set while the stage ran. When the stage set a
  new process record (``VmHWM`` rose), that record is its peak, exactly; otherwise the stage
  stayed below an earlier peak, and its own is the largest ``VmRSS`` sampled every ``INTERVAL_S``
  (a spike shorter than that, below the earlier record, can be missed).
- ``child_peak_rss_mb``: the largest peak of any child process (or grandchild) that ran during
  the stage: each one's own ``VmHWM`` (its peak since it started), sampled while it lives; a
  child's growth in its last ``INTERVAL_S`` can be missed. Absent when no child ran.

Their sum bounds what the stage held at once. Not used: ``RUSAGE_CHILDREN`` (on Linux a child's
``ru_maxrss`` includes its parent's resident set at fork: every child of a 3 GB export "peaked"
at 3 GB), and resetting ``VmHWM`` at each stage through ``/proc/self/clear_refs`` (exact, but it
resets the process's ``ru_maxrss`` too, which ``time`` and the caller read).

Where ``/proc`` is absent (macOS, Windows), ``peak_rss_mb`` is the process's high-water mark so
far, as before, and children are not counted.
"""

import os
import threading
import time

from edgekit.runtime._cpu import peak_rss_mb, status_mb

INTERVAL_S = 0.05
_PROC = os.path.isdir("/proc/self")


def _status_mb(pid, field) -> float:
    """``VmRSS``/``VmHWM`` of ``pid`` in MB; 0 once it is gone."""
    return status_mb(pid, field) or 0.0


def _descendants(pid) -> list:
    """Every process below ``pid`` (children of any of its threads, and theirs)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as fh:
                    children = [int(p) for p in fh.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            pending += children
    return found


def children_peak_mb() -> float:
    """The largest ``VmHWM`` (a process's own peak since it started) among this process's live
    descendants; 0 when there are none."""
    return max((_status_mb(child, "VmHWM") for child in _descendants(os.getpid())), default=0.0)


class Stage:
    """One open stage's maxima so far; ``start_mb``: this process's resident set when it opened."""

    def __init__(self):
        self.start_mb = _status_mb("self", "VmRSS") if _PROC else None
        self.own, self.child = self.start_mb or 0.0, 0.0
        self.record = peak_rss_mb()


class _Monitor:
    """One sampling thread for every open stage of the process (stages may run at once, from the
    threads of a parallel recipe search); each open stage keeps its own maxima."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open = set()
        self._thread = None

    def open(self) -> Stage:
        stage = Stage()
        with self._lock:
            self._open.add(stage)
            if _PROC and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edgekit-stage-memory", daemon=True)
                self._thread.start()
        return stage

    def close(self, stage) -> tuple:
        """(this process's peak, the largest child's peak or None) within the stage, in MB."""
        with self._lock:
            if _PROC:
                self._sample()
            self._open.discard(stage)
        record = peak_rss_mb()
        if not _PROC:
            return record, None  # (the high-water mark so far: no finer measure here)
        own = record if record > stage.record else stage.own  # a new record is the stage's peak, exactly
        return own, (stage.child or None)

    def _sample(self):
        own, child = _status_mb("self", "VmRSS"), children_peak_mb()
        for stage in self._open:
            stage.own = max(stage.own, own)
            stage.child = max(stage.child, child)

    def _run(self):
        while True:
            time.sleep(INTERVAL_S)
            with self._lock:
                if not self._open:
                    self._thread = None
                    return
                self._sample()


_MONITOR = _Monitor()


def open_stage() -> Stage:
    """Start measuring a stage; pass what it returns to ``close_stage``."""
    return _MONITOR.open()


def close_stage(stage: Stage) -> tuple:
    """(``peak_rss_mb``, ``child_peak_rss_mb`` or None) of ``stage``, in MB."""
    return _MONITOR.close(stage)
