"""Running a model file you did not produce in a child process.

A crash in a native parser or kernel (a crafted TFLite buffer, a bad IR constant), a hang
(an ONNX ``Loop`` with a 2^62 trip count) or a runaway allocation then kills or stalls
only the child; the caller gets a ``ModelLoadError`` or a ``ChildFailure`` and goes on.

The child is started isolated: ``python -I`` (no current directory, no ``PYTHON*``
variables, no user site on ``sys.path``), in an empty temporary working directory, with
the parent's own import path minus the working directory passed explicitly, so a
``json.py`` in the folder where ``edgekit verify`` runs is never imported.
"""

import json
import os
import subprocess
import sys
import tempfile

from ._errors import ModelLoadError

# Executed by ``python -I -c``: the only code the child runs before edgekit.runtime.
_BOOTSTRAP = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
              "from edgekit.runtime._child import main; sys.exit(main(sys.argv[2:]))")
EXIT_LOAD, EXIT_RUN = 3, 4


class ChildFailure(Exception):
    """The child crashed, timed out or failed to run the model; ``str()`` says which."""


def _import_path() -> list:
    """The parent's import path without the entries that mean "the working directory"."""
    cwd = os.path.realpath(os.getcwd())
    return [p for p in sys.path if p and os.path.realpath(p) != cwd]


def spawn(args, *, timeout, what) -> dict:
    """Run ``main(args)`` in an isolated child; return its JSON answer or raise.

    ModelLoadError when the child refused the file, ChildFailure for a crash, a
    timeout or a failure while running it.
    """
    command = [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(_import_path()), *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="edgekit-child-") as empty:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=empty,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ChildFailure(f"{what} did not finish within {timeout:g} s (time limit; "
                               "raise it with --timeout)") from exc
    answer = _answer(result.stdout)
    if result.returncode == 0 and answer is not None:
        return answer
    if result.returncode == EXIT_LOAD and answer is not None:
        raise ModelLoadError(answer["error"])
    if result.returncode == EXIT_RUN and answer is not None:
        raise ChildFailure(answer["error"])
    if result.returncode < 0:
        raise ChildFailure(f"{what} crashed the isolated process (signal {-result.returncode}); "
                           "this process is unaffected")
    tail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.returncode}"
    raise ChildFailure(f"{what} failed in an isolated process: {tail}")


def run_isolated(file, inputs: dict, *, timeout, entry=None, batch=64, what=None) -> dict:
    """Run model ``file`` (described by manifest ``entry``, or bare) over ``inputs`` in batches in
    an isolated child; return its outputs by name. Raises as ``spawn`` does."""
    import numpy as np
    with tempfile.TemporaryDirectory(prefix="edgekit-run-") as tmp:
        entry_json = os.path.join(tmp, "entry.json")
        with open(entry_json, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        inputs_npz, outputs_npz = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
        np.savez(inputs_npz, **inputs)
        answer = spawn(["run", os.path.abspath(file), entry_json, inputs_npz, outputs_npz, batch], timeout=timeout,
                       what=what or f"running {os.path.basename(file)}")
        with np.load(outputs_npz, allow_pickle=False) as archive:
            return {name: archive[name] for name in answer["outputs"]}


def _answer(stdout):
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


# --- the child's side -------------------------------------------------------------------------

def main(argv) -> int:
    import numpy as np

    from . import _model

    command, *rest = argv
    try:
        if command == "probe":
            path, backend = rest
            model = _model.load(path, backend=backend)
            model.run(_model.trial_inputs(model))  # a constant used only at inference is read here
            return _say({"ok": True})
        file, entry_json, inputs_npz, outputs_npz, batch = rest
        with open(entry_json, encoding="utf-8") as fh:
            entry = json.load(fh)
        model = _model.load(file) if entry is None else _model.load_artifact(file, entry)
    except ModelLoadError as exc:
        return _say({"error": str(exc)}, EXIT_LOAD)
    try:
        with np.load(inputs_npz, allow_pickle=False) as archive:
            inputs = {k: archive[k] for k in archive.files}
        count = len(next(iter(inputs.values())))
        step = int(batch)
        chunks = [model.run({k: v[i:i + step] for k, v in inputs.items()}) for i in range(0, count, step)]
        outputs = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        np.savez(outputs_npz, **outputs)
    except Exception as exc:  # whatever the engine raised on this file is the answer to report
        return _say({"error": f"{type(exc).__name__}: {exc}"}, EXIT_RUN)
    return _say({"ok": True, "outputs": list(outputs)})


def _say(answer, code=0) -> int:
    print(json.dumps(answer))
    return code
