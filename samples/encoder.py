"""A BERT-class transformer encoder built in code (random weights; nothing is downloaded).

Two int64 inputs by name, ``input_ids`` and ``attention_mask`` ([batch, seq]), and one
output, ``last_hidden_state`` ([batch, seq, hidden]): the shape of a sentence-embedding
model such as MiniLM. Used by the benchmarks (``minilm``: 6 layers, hidden 384, 12 heads,
the size of all-MiniLM-L6-v2) and by the tests (``tiny``).

    edgekit export samples/encoder.py:tiny --to onnx,openvino --int8 \\
        --calib tokens.npz --eval tokens.npz --model-type transformer --out encoder-bundle

``token_batches`` makes such an ``.npz``-style dict of random token ids and padding masks.
"""

import math

import numpy as np
import torch
import torch.nn as nn


class EncoderLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _split(self, x):
        batch, seq, hidden = x.shape
        return x.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, x, mask_bias):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask_bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


class Encoder(nn.Module):
    def __init__(self, vocab=30522, hidden=384, layers=6, heads=12, intermediate=1536, max_positions=512):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate) for _ in range(layers))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embedding_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


def minilm():
    torch.manual_seed(0)
    return Encoder().eval()


def tiny():
    torch.manual_seed(0)
    return Encoder(vocab=100, hidden=32, layers=2, heads=4, intermediate=64, max_positions=64).eval()


def token_batches(count, seq=128, vocab=30522, seed=0) -> dict:
    """Random token ids (id 0 = padding) with padding masks of varied lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 4, seq + 1, count)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, (count, seq)).astype(np.int64) * mask
    return {"input_ids": ids, "attention_mask": mask}
