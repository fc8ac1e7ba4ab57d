"""How much memory an export may use (``max_memory``, CLI ``--max-memory 3G``), the settings that
follow from it, and giving memory back between stages.

Measured on MobileNetV2 at 224x224 (``benchmarks/memory.py``: each route in a fresh process, the
whole process tree sampled), where an export's memory goes:

- the framework's own footprint: TensorFlow + Keras imported 0.74 GB, a built Keras MobileNetV2
  1.75 GB of which glibc kept 0.9 GB freed but unreturned; PyTorch 0.4-0.5 GB;
- samples run at once: Keras runs a batch eagerly at ~75 MB per 224x224 sample (the reference of
  32 eval samples peaked at 3.9 GB, 64 at 6.5 GB); onnxruntime with every tensor exposed (the
  mixed-precision blame pass, 32 samples of two graphs) reached 5.5 GB;
- a verification child: 0.1-0.6 GB beside the export;
- not the TFLite converter's calibration: it already takes the representative dataset one sample
  at a time (1.4 GB for the whole stage).

So the settings here are batch sizes: samples per call of the source's framework and per
verification call, from the budget left after the framework's footprint at a cost per sample
proportional to the sample's bytes. (The blame pass now runs 4 samples at a time, and
onnxruntime calibrates 8 at a time, whatever the budget: measured under 3 GB.)

Not a setting: running the TensorFlow converters (TFLite, tf2onnx) in a child process that exits.
Measured with a child per conversion, every conversion stage peaked *higher* — the export's own
TensorFlow stays loaded for the reference, and the child loads a second one: TFLite int8 1.4 GB in
this process against 1.1 + 1.2 GB with a child; tf2onnx 2.2 GB against 1.2 + 1.9 GB — while what a
conversion leaves behind here, ``release`` returns (the process went back to 1.1-1.3 GB).
"""

import gc
import math
import re
import sys
from dataclasses import dataclass

from .errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(value, what="max_memory") -> int:
    """Bytes from an integer or a size: ``"3G"``/``"3072M"`` (binary, as ``docker -m`` and ``ulimit``
    read them), ``"3GiB"``, ``"3GB"`` (decimal). ConfigError naming ``what`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value) if isinstance(value, str) else None
    if match and match[2].lower() in _UNITS and float(match[1]) > 0:
        return int(float(match[1]) * _UNITS[match[2].lower()])
    raise ConfigError(f"{what}: expected bytes (an integer) or a size such as \"3G\", \"3072M\" or \"2GiB\", "
                      f"got {value!r}")


# Resident memory beside the samples run at once: the framework, the model, the data and headroom
# (measured: TensorFlow, a Keras MobileNetV2 and 160 images held 1.07 GB when its reference started,
# once freed memory was returned; 16 samples at once then peaked at 2.34 GB, 1.54 GB + 16 x 75 MB
# predicted 2.73 GB).
FOOTPRINT_MB = 1536
# Resident memory per sample run at once, as a multiple of the sample's input bytes (measured:
# Keras MobileNetV2 ~75 MB per 0.57 MB 224x224x3 sample). Conservative for PyTorch (0.3 GB for
# 32 samples: it frees activations as it goes) and for onnxruntime in a verification child
# (0.3-0.6 GB for 32).
PER_SAMPLE_FACTOR = 130
# Without a budget: this many samples at once in the export's process. 8 kept every MobileNetV2
# route under 3 GB (the Keras reference: 1.64 GB, against 3.9 GB with 32 at once).
DEFAULT_BATCH = 8
MAX_BATCH = 64
# ... and in a verification child, as before (0.1-0.6 GB for 32 MobileNetV2 samples). Also the batch
# of an ONNX source's reference, which runs as verification does, so that its fp32 artifact matches
# it bit for bit.
VERIFY_BATCH = 64


@dataclass(frozen=True)
class MemoryPlan:
    """What an export does to stay within ``max_memory`` bytes (None: no budget was given)."""

    max_memory: int | None = None
    batch: int = DEFAULT_BATCH                # samples per call of the source's framework (the reference)
    child_batch: int = VERIFY_BATCH           # samples per call in a verification child

    def describe(self) -> dict:
        """For the report: the budget and what it chose."""
        return {"max_memory_mb": None if self.max_memory is None else round(self.max_memory / 2**20),
                "batch": self.batch, "child_batch": self.child_batch}


def plan(max_memory, sample_bytes: int) -> MemoryPlan:
    """The settings for a budget of ``max_memory`` bytes (None: the defaults) and samples of
    ``sample_bytes`` bytes (all of one sample's inputs). A budget too small for even one sample
    beyond the framework's footprint still runs (batch 1), and the export warns if it went over."""
    if max_memory is None:
        return MemoryPlan()
    per_sample_mb = max(sample_bytes, 1) * PER_SAMPLE_FACTOR / 2**20
    fits = (max_memory / 2**20 - FOOTPRINT_MB) / per_sample_mb
    batch = min(1 << int(math.log2(fits)) if fits >= 1 else 1, MAX_BATCH)  # (a power of two)
    return MemoryPlan(max_memory, batch, min(batch, VERIFY_BATCH))


def memory_line(memory: dict) -> str:
    """One sentence for the reports: the budget and what it chose (``MemoryPlan.describe()``; empty
    for a report without one, e.g. ``verify``'s)."""
    if not memory:
        return ""
    budget = f"--max-memory {memory['max_memory_mb']} MB" if memory.get("max_memory_mb") else "no --max-memory"
    return (f"Memory settings ({budget}): {memory['batch']} samples per call of the framework, "
            f"{memory['child_batch']} per verification call.")


def stage_peak_mb(stage: dict) -> float:
    """What a stage record says was held at once: this process's peak plus its largest child's."""
    return (stage.get("peak_rss_mb") or 0) + (stage.get("child_peak_rss_mb") or 0)


def over_budget(stages, max_memory) -> list:
    """Warnings for the stages whose peak (this process plus its largest child) went over the
    budget: the settings are estimates, measured on MobileNetV2-class models."""
    if max_memory is None:
        return []
    limit = max_memory / 2**20
    warnings = []
    for stage in stages:
        held = stage_peak_mb(stage)
        if held > limit:
            warnings.append(f"memory: stage {stage['stage']!r} peaked at {held:.0f} MB (process "
                            f"{stage.get('peak_rss_mb') or 0:.0f} + child {stage.get('child_peak_rss_mb') or 0:.0f}), "
                            f"over --max-memory {limit:.0f} MB")
    return warnings


def release():
    """Give freed memory back to the system between stages: collect cycles (a converter's graph
    and its buffers often sit in one; 0.3 s with TensorFlow and PyTorch loaded), then trim."""
    gc.collect()
    trim_heap()


def trim_heap():
    """Ask glibc to return its free heap pages to the system, which it does not do by itself for
    memory freed by many threads. Measured: a Keras MobileNetV2 process went from 1.75 GB to
    0.79 GB after building the model (and 2.4 to 0.87 GB after a batch of 64), in 0.11 s."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
