"""The child's side of ``_child``: load the model file, run it, answer in a JSON file.

Apart from ``_child`` (the parent's side, which starts this module in a fresh interpreter) so that
the runtime's modules import one way: ``_model`` spawns children through ``_child``; this module
loads models through ``_model``.
"""

import json
import os
import traceback

from ._child import EXIT_BUG, EXIT_LOAD, EXIT_RUN, save_arrays
from ._errors import EngineError, ModelLoadError, RuntimeInputError


def main(argv) -> int:
    import numpy as np

    from . import _model

    answer_file, command, *rest = argv
    try:
        if command == "probe":
            path, backend = rest
            model = _model.load(path, backend=backend)
        else:
            file, request_json, inputs_npz, outputs_npz = rest
            with open(request_json, encoding="utf-8") as fh:
                request = json.load(fh)
            entry = request["entry"]
            threads = request.get("threads")
            model = _model.load(file, threads=threads) if entry is None else \
                _model.load_artifact(file, entry, threads=threads)
    except ModelLoadError as exc:
        return _say(answer_file, {"error": str(exc)}, EXIT_LOAD)
    if command == "probe":
        # A constant used only at inference is read here: a crash in it is the caller's rejection.
        # An error on synthetic zeros (a shape the model does not take) is not: real data may fit.
        try:
            model.run(_model.trial_inputs(model))
            return _say(answer_file, {"ok": True, "trial_run": "passed"})
        except Exception as exc:  # any engine error on made-up data is only reported
            return _say(answer_file, {"ok": True, "trial_run": f"{type(exc).__name__}: {exc}"})
    try:
        with np.load(inputs_npz, allow_pickle=False) as archive:
            inputs = {name: archive[f"a{i}"] for i, name in enumerate(request["inputs"])}
        outputs = model.run_batched(inputs, request["batch"], _progress_writer(request.get("progress")))
        save_arrays(outputs_npz, list(outputs.values()))
    except (EngineError, RuntimeInputError, MemoryError) as exc:  # the model failed on this data: a verdict
        return _say(answer_file, {"error": f"{type(exc).__name__}: {exc}"}, EXIT_RUN)
    except Exception:  # anything else is a bug around the engine: reported as one, with where it happened
        return _say(answer_file, {"bug": traceback.format_exc(limit=-3).strip()[-2000:]}, EXIT_BUG)
    return _say(answer_file, {"ok": True, "outputs": list(outputs)})


def _say(path, answer, code=0) -> int:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(answer, fh)
    return code


def _progress_writer(path):
    """``on_batch`` writing "done total" to ``path`` (replaced whole, so the parent never reads half)."""
    if not path:
        return None

    def write(done, total):
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(f"{done} {total}")
        os.replace(path + ".tmp", path)
    return write
