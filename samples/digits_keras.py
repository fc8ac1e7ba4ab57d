"""The Keras half of the bundled default: a Keras 3 CNN trained on scikit-learn's digits (NHWC),
saved as ``.keras`` and exported with edgekit to TFLite and ONNX, fp32 and int8.

    python samples/digits_keras.py            # train if needed, export, print the parity table
    python samples/digits_keras.py --data-only

``build_model`` is also a factory: ``edgekit export samples/digits_keras.py:build_model --weights W``.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
WORK = Path(__file__).resolve().parent / "work"
SEED = 0


def build_model():
    import keras
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, name="logits"),
    ], name="digits_keras")


def load_splits(seed=SEED):
    """The same split as the PyTorch sample, laid out NHWC (N, 8, 8, 1)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from digits import load_splits as nchw_splits
    return tuple((x.transpose(0, 2, 3, 1).copy(), y) for x, y in nchw_splits(seed))


def train(model, x, y, *, epochs=40, seed=SEED):
    return _compile_fit(model, x, y, epochs=epochs, lr=3e-3, seed=seed)


def fit(model, steps, callbacks=(), *, lr=1e-3, seed=SEED):
    """edgekit's training hook (``--train samples/digits_keras.py:fit``): fine-tune ``model`` for
    about ``steps`` Adam steps on the digits training split, passing edgekit's ``callbacks`` on to
    ``model.fit`` (TensorFlow Model Optimization's pruning needs its UpdatePruningStep there). Works
    for Keras 3 and tf_keras models alike."""
    import math
    (x, y), _, _ = load_splits()
    epochs = max(1, math.ceil(steps / math.ceil(len(x) / 64)))
    return _compile_fit(model, x, y, epochs=epochs, lr=lr, seed=seed, callbacks=callbacks)


def _compile_fit(model, x, y, *, epochs, lr, seed, callbacks=()):
    import importlib
    keras = importlib.import_module("tf_keras" if type(model).__module__.startswith("tf_keras") else "keras")
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True, callbacks=list(callbacks))
    return model


def prepare(work=WORK, *, force=False) -> dict:
    import keras
    work.mkdir(parents=True, exist_ok=True)
    paths = {"model": work / "digits.keras", "calib": work / "calib_nhwc.npz", "eval": work / "eval_nhwc.npz"}
    (x_train, y_train), (x_cal, y_cal), (x_eval, y_eval) = load_splits()
    np.savez(paths["calib"], x=x_cal, y=y_cal)
    np.savez(paths["eval"], x=x_eval, y=y_eval)
    if force or not paths["model"].is_file():
        keras.utils.set_random_seed(SEED)
        model = train(build_model(), x_train, y_train)
        acc = (model.predict(x_eval, verbose=0).argmax(1) == y_eval).mean() * 100
        print(f"trained Keras digits CNN: eval accuracy {acc:.2f}%", file=sys.stderr)
        tmp = paths["model"].with_name("tmp-" + paths["model"].name)
        model.save(tmp)
        tmp.replace(paths["model"])
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(WORK))
    parser.add_argument("--out", default=None, help="bundle folder (default: WORK/digits_keras_bundle)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--data-only", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work)
    out = args.out or str(work / "digits_keras_bundle")
    paths = prepare(work, force=args.retrain)
    if args.data_only:
        return 0
    cmd = [sys.executable, "-I", "-m", "edgekit", "export", str(paths["model"]), "--int8", "--to", "tflite,onnx,openvino",
           "--calib", str(paths["calib"]), "--eval", str(paths["eval"]), "--out", out]
    print(f"$ edgekit export digits.keras --int8 --to tflite,onnx,openvino --calib calib_nhwc.npz --eval eval_nhwc.npz "
          f"--out {out}", file=sys.stderr)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
