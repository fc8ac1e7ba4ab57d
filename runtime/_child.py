"""Running a model file you did not produce in a child process.

A crash in a native parser or kernel (a crafted TFLite buffer, a bad IR constant), a hang
(an ONNX ``Loop`` with a 2^62 trip count) or a runaway allocation then kills or stalls
only the child; the caller gets a ``ModelLoadError`` or a ``ChildFailure`` and goes on.

The child is started isolated: ``python -I`` (no current directory, no ``PYTHON*``
variables, no user site on ``sys.path``), in an empty temporary working directory, with
the parent's own import path minus the working directory passed explicitly, so a
``json.py`` in the folder where ``edgekit verify`` runs is never imported. It answers in
a JSON file (what the engine prints cannot get in the way) and exchanges arrays in
``.npz`` files whose members are named by position (tensor names travel in the JSON).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ._errors import ModelLoadError

# Executed by ``python -I -c``: the only code the child runs before edgekit.runtime.
_BOOTSTRAP = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
              "from edgekit.runtime._childmain import main; sys.exit(main(sys.argv[2:]))")
EXIT_LOAD, EXIT_RUN, EXIT_BUG = 3, 4, 5
_STDERR_TAIL = 2000


class ChildFailure(Exception):
    """The child crashed, timed out or failed to run the model; ``str()`` says which."""


def _import_path() -> list:
    """The parent's import path without the entries that mean "the working directory"."""
    cwd = os.path.realpath(os.getcwd())
    return [p for p in sys.path if p and os.path.realpath(p) != cwd]


@dataclass(frozen=True)
class Launcher:
    """How a child Python starts: behind an emulator's command (``prefix``, e.g. ``qemu-x86_64 -cpu
    Haswell-v4``), with which interpreter and import path (default: this one's, minus the working
    directory), and which of its stderr lines are the emulator's chatter (``noise``)."""

    prefix: tuple = ()
    python: str | None = None
    path: tuple | None = None
    noise: str | None = None

    def command(self) -> list:
        path = list(self.path) if self.path is not None else _import_path()
        return [*self.prefix, self.python or sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(path)]


NATIVE = Launcher()


def spawn(args, *, timeout, what, workdir=None, launcher=NATIVE, watch=None) -> dict:
    """Run ``main([answer_file, *args])`` in an isolated child; return its JSON answer or raise.

    ModelLoadError when the child refused the file, ChildFailure for a crash, a
    timeout or a failure while running it. ``watch()`` is called about twice a second while the
    child runs (the caller reads the child's progress file).
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-child-") as empty:
        answer_file = os.path.join(workdir or empty, "answer.json")
        command = [*launcher.command(), answer_file, *map(str, args)]
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=empty,
                              stdin=subprocess.DEVNULL) as child:
            try:
                stderr = _wait(child, timeout, what, watch)
            except BaseException:  # Ctrl-C, a timeout, a failing watch: the child never outlives the call
                child.kill()
                child.communicate()
                raise
        answer = _answer(answer_file)
    if child.returncode == 0 and answer is not None:
        return answer
    if child.returncode == EXIT_LOAD and answer is not None:
        raise ModelLoadError(answer["error"])
    if child.returncode == EXIT_RUN and answer is not None:
        raise ChildFailure(answer["error"])
    if child.returncode == EXIT_BUG and answer is not None:
        # Not the model's failure: a bug in the code around the engine, raised as one (not a verdict).
        raise RuntimeError(f"internal error while {what} in an isolated process: {answer['bug']}")
    if child.returncode < 0:
        raise ChildFailure(f"{what} crashed the isolated process (signal {-child.returncode}); "
                           "this process is unaffected")
    lines = [line for line in stderr.decode("utf-8", errors="replace")[-100 * _STDERR_TAIL:].splitlines()
             if line.strip() and not (launcher.noise and line.startswith(launcher.noise))]
    tail = lines[-1][-_STDERR_TAIL:] if lines else f"exit code {child.returncode}"
    raise ChildFailure(f"{what} failed in an isolated process: {tail}")


def _wait(child, timeout, what, watch) -> bytes:
    """The child's stderr once it exits; killed (and ChildFailure) past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stderr = child.communicate(timeout=max(0.0, min(0.5, deadline - time.monotonic())))[1]
            if watch is not None:
                watch()  # the last progress the child wrote
            return stderr
        except subprocess.TimeoutExpired as exc:
            if time.monotonic() >= deadline:  # (spawn kills it)
                raise ChildFailure(f"{what} did not finish within {timeout:g} s (time limit; "
                                   "raise it with --timeout)") from exc
            if watch is not None:
                watch()


def _answer(path):
    try:
        with open(path, encoding="utf-8") as fh:
            answer = json.load(fh)
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def run_isolated(file, inputs: dict, *, timeout, entry=None, batch=64, what=None, launcher=NATIVE,
                 on_batch=None, threads=None) -> dict:
    """Run model ``file`` (described by manifest ``entry``, or bare) over ``inputs`` in batches in
    an isolated child (started by ``launcher``: natively, or in an emulated CPU); return its outputs
    by name. ``on_batch(done, total)`` follows the child's progress; ``threads``: the engine's
    (default: its own, every core). Raises as ``spawn`` does."""
    import numpy as np
    with tempfile.TemporaryDirectory(prefix="edgekit-run-") as tmp:
        request, progress = os.path.join(tmp, "request.json"), os.path.join(tmp, "progress")
        with open(request, "w", encoding="utf-8") as fh:
            json.dump({"entry": entry, "inputs": list(inputs), "batch": int(batch),
                       "progress": progress if on_batch else None, "threads": threads}, fh)
        inputs_npz, outputs_npz = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
        save_arrays(inputs_npz, list(inputs.values()))
        answer = spawn(["run", os.path.abspath(file), request, inputs_npz, outputs_npz], timeout=timeout,
                       what=what or f"running {os.path.basename(file)}", workdir=tmp, launcher=launcher,
                       watch=(lambda: _report_progress(progress, on_batch)) if on_batch else None)
        with np.load(outputs_npz, allow_pickle=False) as archive:
            return {name: archive[f"a{i}"] for i, name in enumerate(answer["outputs"])}


def _report_progress(path, on_batch):
    try:
        with open(path, encoding="utf-8") as fh:
            done, total = map(int, fh.read().split())
    except (OSError, ValueError):  # not written yet
        return
    on_batch(done, total)


def save_arrays(path, arrays):
    import numpy as np
    with open(path, "wb") as fh:
        np.savez(fh, **{f"a{i}": a for i, a in enumerate(arrays)})
