import numpy as np
import pytest

from edgekit.config import DEFAULT_TOLERANCES, Precision
from edgekit.errors import ConfigError
from edgekit.parity import compare, judge

INT8 = DEFAULT_TOLERANCES[Precision.INT8]
REF = {"logits": np.random.default_rng(0).standard_normal((100, 10)).astype(np.float32)}
LABELS = REF["logits"].argmax(1)


def test_identical_outputs_pass_with_full_metrics():
    result = judge(compare(REF, {"logits": REF["logits"].copy()}, LABELS), DEFAULT_TOLERANCES[Precision.FP32])
    m = result.metrics
    assert result.passed
    assert m["accuracy"] == m["reference_accuracy"] == 100 and m["accuracy_drop"] == 0
    assert m["cosine"] == 1.0 and m["top1_agreement"] == 1.0 and m["max_abs_error"] == 0


def test_small_noise_passes_int8_but_fails_fp32():
    noisy = REF["logits"] + np.random.default_rng(1).normal(0, 0.01, REF["logits"].shape).astype(np.float32)
    assert judge(compare(REF, {"logits": noisy}, LABELS), INT8).passed
    fp32 = judge(compare(REF, {"logits": noisy}, LABELS), DEFAULT_TOLERANCES[Precision.FP32])
    assert not fp32.passed and any("cosine" in f for f in fp32.failures)


def test_nan_and_all_zero_outputs_always_fail():
    nan = REF["logits"].copy()
    nan[0, 0] = np.nan
    assert "NaN" in judge(compare(REF, {"logits": nan}), INT8).failures[0]
    zero = judge(compare(REF, {"logits": np.zeros_like(REF["logits"])}), INT8)
    assert any("all zeros" in f for f in zero.failures)


def test_accuracy_drop_collects_every_failure():
    wrong = REF["logits"].copy()
    wrong[:10] = -wrong[:10]  # flips the arg-max of 10% of samples
    result = judge(compare(REF, {"logits": wrong}, LABELS), INT8)
    assert result.metrics["accuracy_drop"] == 10.0
    assert any("accuracy drop" in f for f in result.failures)
    assert any("top-1 agreement" in f for f in result.failures)


def test_missing_and_misshaped_outputs_fail():
    ref = {"a": np.ones((4, 3)), "b": np.ones((4, 2))}
    result = judge(compare(ref, {"a": np.ones((4, 2))}), INT8)
    assert any("shape mismatch" in f for f in result.failures)
    assert any("b: output missing" in f for f in result.failures)


def test_default_artifact_is_smallest_within_ten_percent_of_fastest():
    from edgekit.pipeline import choose_default

    from tests.manifests import artifact

    def art(id_, ms, size, ok=True, layout="nchw"):
        return artifact(id=id_, latency_ms=ms, size_bytes=size, parity={"passed": ok}, format="onnx",
                        precision="int8" if id_ == "int8" else "fp32", inputs=[{"layout": layout}])

    assert choose_default([art("fp32", 1.00, 100), art("int8", 0.97, 30)])["id"] == "int8"
    # Slower than its fp32 sibling, even by noise: never the default (size is not why one quantizes for speed).
    assert choose_default([art("fp32", 1.00, 100), art("int8", 1.05, 30)])["id"] == "fp32"
    assert choose_default([art("fp32", 1.00, 100), art("int8", 1.50, 30)])["id"] == "fp32"
    assert choose_default([art("fp32", 1.00, 100), art("int8", 0.50, 30, ok=False)])["id"] == "fp32"
    assert choose_default([art("fp32", 1.0, 100, ok=False)]) is None
    # A faster artifact in another layout than the source's (PyTorch -> TFLite NHWC) is not the default.
    both = [art("onnx", 1.0, 100), art("tflite", 0.5, 30, layout="nhwc")]
    assert choose_default(both, source_layouts=["nchw"])["id"] == "onnx"
    assert choose_default(both)["id"] == "tflite"


def test_load_picks_among_candidates_by_the_exports_rule():
    """``load(bundle, precision=...)`` and the export's default chose by two rules (fastest vs
    smallest within 10% of the fastest): one rule now, ``edgekit.runtime.preferred``."""
    from edgekit.runtime._manifest import select_artifact

    from tests.manifests import manifest_of

    def art(id_, fmt, ms, size):
        return {"id": id_, "format": fmt, "precision": "int8", "latency_ms": ms, "size_bytes": size,
                "inputs": [{"layout": "nchw"}]}
    manifest = manifest_of([art("onnx-int8", "onnx", 0.95, 100), art("openvino-int8", "openvino", 1.0, 30)],
                           default_artifact="onnx-fp32", inputs=[{"layout": "nchw"}])
    assert select_artifact(manifest, precision="int8").id == "openvino-int8"


def test_one_bad_sample_of_a_regression_output_fails_int8_and_per_output_limits_apply():
    from edgekit.config import parse_tolerance_overrides
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((200, 8))
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    out[7] = -ref[7] * 0.2 + ref[7]  # one sample off (cosine ~1 still), then one truly wrong:
    out[9] = rng.standard_normal(8)
    reference = {"boxes": ref, "logits": ref}
    outputs = {"boxes": out, "logits": out}
    kinds = {"boxes": "regression", "logits": "classification"}
    result = judge(compare(reference, outputs, None, kinds), DEFAULT_TOLERANCES[Precision.INT8])
    assert result.per_output["boxes"]["cosine"] > 0.99  # the mean hides it
    assert [f for f in result.failures if "worst-sample" in f] == [
        f for f in result.failures if f.startswith("boxes: worst-sample cosine")] and len(result.failures) == 1
    relaxed = parse_tolerance_overrides(["int8.boxes.min_sample_cosine=-1"])[Precision.INT8]
    assert relaxed.per_output == {"boxes": {"min_sample_cosine": -1.0}}
    assert judge(compare(reference, outputs, None, kinds), relaxed).passed
    with pytest.raises(ConfigError, match="PRECISION.OUTPUT.FIELD"):
        parse_tolerance_overrides(["int8.boxes.min_cosinus=1"])
    with pytest.raises(ConfigError, match="min_sample_cosine: expected a value in"):
        parse_tolerance_overrides(["int8.boxes.min_sample_cosine=2"])


def test_per_token_outputs_are_compared_at_real_tokens_only():
    from edgekit.parity import token_mask
    rng = np.random.default_rng(4)
    mask = np.zeros((20, 8), np.int64)
    mask[:, :3] = 1                                   # three real tokens, five padding positions
    ref = rng.standard_normal((20, 8, 16))
    out = ref + 0.001 * rng.standard_normal(ref.shape)
    out[:, 3:] = rng.standard_normal((20, 5, 16))     # padding drifts freely, as under int8
    kinds = {"last_hidden_state": "embedding"}
    unmasked = judge(compare({"last_hidden_state": ref}, {"last_hidden_state": out}, None, kinds), INT8)
    assert not unmasked.passed
    masked = judge(compare({"last_hidden_state": ref}, {"last_hidden_state": out}, None, kinds,
                           token_mask({"input_ids": mask, "attention_mask": mask})), INT8)
    assert masked.passed and masked.per_output["last_hidden_state"]["masked_by"] == "attention_mask"
    out[:, 1] = -ref[:, 1]                            # a real token wrong: still caught
    assert not judge(compare({"last_hidden_state": ref}, {"last_hidden_state": out}, None, kinds,
                             token_mask({"attention_mask": mask})), INT8).passed
    assert token_mask({"attention_mask": np.ones((2, 3, 4))}) is None  # not a [samples, sequence] mask
