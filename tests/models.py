"""Small awkward models for the tests: several inputs and outputs, int64 tokens, PReLU, ceil-mode pooling."""

import torch
import torch.nn as nn


class TwoInputTokens(nn.Module):
    """int64 token ids + float features -> dict of two outputs (logits, embedding)."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.feat = nn.Linear(4, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens, features):
        h = self.embed(tokens) + self.feat(features)[:, None, :]
        h, _ = self.attn(h, h, h, need_weights=False)
        pooled = h.mean(dim=1)
        return {"logits": self.head(pooled), "embedding": pooled}


class PReLUCeil(nn.Module):
    """PReLU and ceil-mode max pooling on an odd-sized image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.PReLU(8)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def two_input_tokens():
    torch.manual_seed(1)
    return TwoInputTokens().eval()


def prelu_ceil():
    torch.manual_seed(2)
    return PReLUCeil().eval()


MODELS_FILE = __file__
