"""``timed_step``: wall time and peak memory of each pipeline stage (this process's and its
children's, within the stage: ``edgekit._peaks``), recorded in the report; and ``advance``: how far
the running stage has got, for the live progress line.

A stage's code deep down (a calibration reader, the verification loop) reports progress with
``advance(done, total, unit)`` without being handed the progress callback: ``timed_step`` makes the
callback the current stage's for the duration of the step (a context variable), and ``advance``
outside any step does nothing.
"""

import time
from contextlib import contextmanager
from contextvars import ContextVar

from ._peaks import close_stage, open_stage
from .memory import release

# A step whose peak was this many MB above where it started releases memory when it ends: below it
# there is little to give back, and a release costs 0.3-1 s with TensorFlow loaded (gc.collect).
RELEASE_FROM_MB = 256

_current = ContextVar("edgekit_stage_progress", default=None)


def advance(done: int, total: int | None = None, unit: str = "samples"):
    """The running stage has done ``done`` of ``total`` ``unit``: reported to the progress callback
    as phase ``"advance"`` with ``{"done", "total", "unit"}``. (From a thread a library started,
    nothing: context variables are not inherited by new threads.)"""
    report = _current.get()
    if report is not None:
        report(done, total, unit)


class Counted:
    """A list whose every pass reports the items consumed so far through ``advance``: a calibration
    set that a quantizer iterates (once or several times) in a loop we cannot see into."""

    def __init__(self, items, unit: str = "calibration samples"):
        self._items, self._unit = list(items), unit

    def __len__(self):
        return len(self._items)

    def __getitem__(self, index):  # (an example input is taken from it: not counted)
        return self._items[index]

    def __iter__(self):
        for done, item in enumerate(self._items, 1):
            advance(done, len(self._items), self._unit)  # (as it is handed out: a consumer may stop at N)
            yield item


@contextmanager
def timed_step(name: str, records: list, progress=None):
    """Record the wall time and peak RSS of the step (``peak_rss_mb``: this process within the step;
    ``child_peak_rss_mb``: the largest child process it ran, when it ran one); ``progress(name, phase,
    record)`` is called with ``"start"``, any number of ``"advance"`` and ``"end"`` (with the record).
    A step that grew this process by ``RELEASE_FROM_MB`` gives its freed memory back to the system
    before the next one starts (``edgekit.memory.release``)."""
    token = None
    if progress:
        progress(name, "start")
        token = _current.set(lambda done, total, unit: progress(name, "advance",
                                                                {"done": done, "total": total, "unit": unit}))
    start = time.perf_counter()
    memory = open_stage()
    record = {"stage": name}
    try:
        yield record
    finally:
        if token is not None:
            _current.reset(token)
        own, child = close_stage(memory)
        if own is not None and memory.start_mb is not None and own - memory.start_mb >= RELEASE_FROM_MB:
            release()
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["peak_rss_mb"] = None if own is None else round(own, 1)
        if child is not None:
            record["child_peak_rss_mb"] = round(child, 1)
        records.append(record)
        if progress:
            progress(name, "end", record)
