"""A second, smaller digits model for sweeps: a PyTorch MLP that trains itself when built.

``edgekit export samples/sweep/mlp.py:build_model`` needs no weights file: the factory trains the
MLP on scikit-learn's bundled digits (seeded, 150 Adam steps, about a second on one CPU), so a plan
can name it with nothing prepared. Its input is the same (N, 1, 8, 8) float32 as the CNN's.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import digits  # noqa: E402 (samples/digits.py: the data split and the training loop)

STEPS = 150  # 94% eval accuracy; the point is a second model, not a good one


def build_model():
    import torch
    import torch.nn as nn

    torch.manual_seed(digits.SEED)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    # One thread: on 2 busy cores, 2 threads took 17 s for what 1 does in 0.3 s (tensors this small).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digits.fit(model, STEPS, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    return model.eval()
