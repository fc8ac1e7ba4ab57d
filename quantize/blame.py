"""What the per-layer blame passes share (``onnx_blame`` for ONNX graphs, ``tflite_blame`` for the
TFLite converter): the ranking's units and limits, the choice of what to keep in float, the table.

Each pass ranks a graph's nodes by the quantization noise they *add* (``noise_added``: relative
noise power at the node's output minus that at its worst input; 0.01 = 1% of the output's energy).
"""

import math

# SQNR of an exact tensor (inputs, constants): a ceiling, so a first layer's loss is finite.
EXACT_DB = 80.0
SAMPLES = 32     # calibration samples a blame pass runs
SHOWN = 10       # rows in the report's table


def noise(db) -> float:
    """Relative noise power of a tensor at ``db`` SQNR."""
    return 10.0 ** (-db / 10.0)


def db(relative) -> float:
    """SQNR in dB of a tensor whose relative noise power is ``relative``, within +-EXACT_DB."""
    if relative <= 0:
        return EXACT_DB
    return max(-EXACT_DB, min(EXACT_DB, -10.0 * math.log10(relative)))


def most_sensitive(rows, quantizable, fraction) -> list:
    """The worst ``fraction`` (at least one) of the nodes the quantizer quantizes, by name; only
    nodes that add noise at all."""
    count = max(1, math.ceil(fraction * len(quantizable)))
    return [r["node"] for r in rows if r["node"] in quantizable and r["noise_added"] > 0][:count]


def shown(rows, kept) -> list:
    """The report's blame table: the top rows, each saying whether it was kept in float."""
    return [{**r, "kept_fp32": r["node"] in kept} for r in rows[:SHOWN]]
