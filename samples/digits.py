"""The bundled default: a small PyTorch CNN trained on scikit-learn's digits (real handwritten
digits, shipped inside scikit-learn: nothing is downloaded), then exported with edgekit.

    python samples/digits.py            # train if needed, export --int8 to ONNX, print the parity table
    python samples/digits.py --data-only   # only write weights.pt, calib.npz and eval.npz

``build_model`` is the factory the CLI loads: ``edgekit export samples/digits.py:build_model``.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

WORK = Path(__file__).resolve().parent / "work"
SEED = 0


def build_model():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


def load_splits(seed=SEED):
    """Digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels: train 1257, calib 180, eval 360."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1257], y[:1257]), (x[1257:1437], y[1257:1437]), (x[1437:], y[1437:])


def train(model, x, y, *, epochs=30, seed=SEED):
    steps = epochs * -(-len(x) // 64)  # whole epochs of batches of 64
    _steps(model, x, y, steps, lr=3e-3, seed=seed)
    return model.eval()


def fit(model, steps, callbacks=(), *, lr=1e-3, seed=SEED):
    """edgekit's training hook (``--train samples/digits.py:fit``): fine-tune ``model`` for ``steps``
    Adam steps on the digits training split. edgekit calls it while pruning or training QAT."""
    (x, y), _, _ = load_splits()
    _steps(model, x, y, steps, lr=lr, seed=seed, callbacks=callbacks)
    model.eval()


def _steps(model, x, y, steps, *, lr, seed, callbacks=()):
    """``steps`` Adam steps on shuffled batches of 64 (a fresh shuffle every epoch); each callback
    runs after every optimizer step."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    done = 0
    while done < steps:
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
            for callback in callbacks:
                callback()
            done += 1
            if done == steps:
                break


def prepare(work=WORK, *, force=False) -> dict:
    """Write weights.pt, calib.npz and eval.npz into ``work`` (training only when missing)."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    paths = {"weights": work / "digits_weights.pt", "calib": work / "calib.npz", "eval": work / "eval.npz"}
    (x_train, y_train), (x_cal, y_cal), (x_eval, y_eval) = load_splits()
    np.savez(paths["calib"], x=x_cal, y=y_cal)
    np.savez(paths["eval"], x=x_eval, y=y_eval)
    if force or not paths["weights"].is_file():
        torch.manual_seed(SEED)
        model = train(build_model(), x_train, y_train)
        with torch.inference_mode():
            acc = (model(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean() * 100
        print(f"trained digits CNN: eval accuracy {acc:.2f}%", file=sys.stderr)
        tmp = paths["weights"].with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(paths["weights"])
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(WORK), help="where weights and data are written")
    parser.add_argument("--out", default=None, help="bundle folder (default: WORK/digits_bundle)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--data-only", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work)
    out = args.out or str(work / "digits_bundle")
    paths = prepare(work, force=args.retrain)
    if args.data_only:
        return 0
    cmd = [sys.executable, "-I", "-m", "edgekit", "export", f"{Path(__file__).resolve()}:build_model",
           "--weights", str(paths["weights"]), "--int8", "--to", "onnx,tflite,openvino",
           "--calib", str(paths["calib"]), "--eval", str(paths["eval"]), "--out", out]
    print("$ edgekit export samples/digits.py:build_model --weights ... --int8 --to onnx,tflite,openvino "
          f"--calib calib.npz --eval eval.npz --out {out}", file=sys.stderr)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
