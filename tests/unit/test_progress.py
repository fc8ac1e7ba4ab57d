"""Stage progress: a live line on a terminal (with how far a stage has got, redrawn while it runs),
one line per finished stage otherwise; ``advance`` reaches the running stage's callback."""

import io
import threading

from edgekit.cli._common import Progress
from edgekit.timing import Counted, advance, timed_step


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_advance_reaches_the_running_steps_callback_and_nothing_outside_one():
    events = []
    advance(1, 2)  # no step: nothing to report to, and no error
    with timed_step("calibrate", [], lambda *event: events.append(event)):
        for _ in Counted(range(3), "calibration samples"):
            pass
        list(Counted(range(2)))  # a quantizer iterating a second time starts again from 1
    with timed_step("quiet step", []):
        advance(5, 5)
    assert [e[1] for e in events] == ["start", "advance", "advance", "advance", "advance", "advance", "end"]
    assert [(e[2]["done"], e[2]["total"]) for e in events if e[1] == "advance"] == [(1, 3), (2, 3), (3, 3), (1, 2), (2, 2)]
    assert events[1][2]["unit"] == "calibration samples" and len(Counted(range(4))) == 4
    assert Counted(range(4))[1] == 1 and len(events) == 7  # indexing is not consumption


def test_a_log_gets_one_line_per_finished_stage_and_no_live_line():
    log = io.StringIO()
    records = []
    progress = Progress(2, stream=log)
    with timed_step("quantize onnx int8", records, progress):
        advance(8, 16, "calibration samples")
    assert log.getvalue() == (f"[1/2] quantize onnx int8: {records[0]['seconds']:.2f} s, "
                              f"peak RSS {records[0]['peak_rss_mb']:.0f} MB\n")


def test_a_terminal_gets_the_stages_progress_and_its_elapsed_time_redrawn():
    terminal = _Terminal()
    progress = Progress(3, stream=terminal)
    progress.TICK_S = 0.01
    redrawn = threading.Event()
    write = terminal.write

    def watch(text):
        if "… " in text and terminal.getvalue().count("calibrate") >= 3:
            redrawn.set()
        return write(text)
    terminal.write = watch
    with timed_step("calibrate", [], progress):
        advance(16, 16, "calibration samples")
        assert redrawn.wait(10)  # the ticker redraws the line while the stage runs
    live = terminal.getvalue()
    assert "\r\033[K[....................] 0/3 calibrate: 16/16 calibration samples … 0 s" in live
    assert live.endswith("\r\033[K" + live.rsplit("\r\033[K", 1)[1]) and "[1/3] calibrate: " in live
    progress("after", "start")  # the next stage's live line counts the finished one
    assert "] 1/3 after … 0 s" in terminal.getvalue()
    progress("after", "end", {"seconds": 0.0, "peak_rss_mb": 1.0})
    assert progress._stage is None  # (and so its ticker thread ends)
