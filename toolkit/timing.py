"""``timed_step``: wall time and peak memory of each pipeline stage, recorded in the report; and
``advance``: how far the running stage has got, for the live progress line.

A stage's code deep down (a calibration reader, the verification loop) reports progress with
``advance(done, total, unit)`` without being handed the progress callback: ``timed_step`` makes the
callback the current stage's for the duration of the step (a context variable), and ``advance``
outside any step does nothing.
"""

import time
from contextlib import contextmanager
from contextvars import ContextVar

from edgekit.runtime._cpu import peak_rss_mb  # (one measure for the stages and the device's bench)

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
    """Record the wall time and peak RSS of the step; ``progress(name, phase, record)`` is called
    with ``"start"``, any number of ``"advance"`` and ``"end"`` (with the record)."""
    token = None
    if progress:
        progress(name, "start")
        token = _current.set(lambda done, total, unit: progress(name, "advance",
                                                                {"done": done, "total": total, "unit": unit}))
    start = time.perf_counter()
    record = {"stage": name}
    try:
        yield record
    finally:
        if token is not None:
            _current.reset(token)
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
        records.append(record)
        if progress:
            progress(name, "end", record)
