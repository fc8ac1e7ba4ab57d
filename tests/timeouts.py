"""Turning a hang into a test failure instead of a stuck test run."""

import contextlib
import signal


@contextlib.contextmanager
def deadline(seconds):
    """Raise TimeoutError in the main thread after ``seconds`` (a blocking open of a FIFO, an endless loop)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
