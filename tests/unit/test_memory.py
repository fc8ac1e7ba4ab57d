"""Memory: --max-memory and the settings it picks, per-stage peaks (this process and its children),
the TFLite representative dataset handed out one sample at a time."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit import memory
from edgekit._peaks import _status_mb
from edgekit.cli.main import main
from edgekit.config import ExportConfig
from edgekit.data import Dataset
from edgekit.errors import ConfigError
from edgekit.quantize.tflite_tf import _representative
from edgekit.timing import timed_step

MB = 1 << 20
IMAGE_224 = 224 * 224 * 3 * 4  # one float32 224x224x3 sample, in bytes


@pytest.mark.parametrize("text, expected", [("3G", 3 << 30), ("3072M", 3072 << 20), ("2GiB", 2 << 30),
                                            ("3GB", 3 * 10**9), (" 512 mb ", 512 * 10**6), ("1.5G", 3 << 29),
                                            (4096, 4096)])
def test_sizes_parse_binary_short_units_and_decimal_long_ones(text, expected):
    assert memory.parse_size(text) == expected
    assert ExportConfig(max_memory=text).max_memory == expected


@pytest.mark.parametrize("bad", ["lots", "0G", "-1G", "3 T", "", 0, True, 2.5])
def test_a_bad_size_is_a_config_error_naming_the_option(bad):
    with pytest.raises(ConfigError, match=r"^max_memory: expected bytes .* got "):
        ExportConfig(max_memory=bad)


def test_the_cli_refuses_a_bad_max_memory_with_exit_2(capsys, tmp_path):
    assert main(["export", "model.onnx", "--out", str(tmp_path / "b"), "--max-memory", "lots"]) == 2
    assert "argument --max-memory: expected bytes (an integer) or a size such as" in capsys.readouterr().err


def test_without_a_budget_the_defaults_hold():
    plan = memory.plan(None, IMAGE_224)
    assert (plan.batch, plan.child_batch) == (8, 64)


@pytest.mark.parametrize("budget, batch", [("16G", 64), ("8G", 64), ("4G", 32), ("3G", 16), ("2G", 4), ("1G", 1)])
def test_the_budget_picks_the_batches(budget, batch):
    plan = memory.plan(memory.parse_size(budget), IMAGE_224)
    assert (plan.batch, plan.child_batch) == (batch, batch)


def test_smaller_samples_run_in_larger_batches_under_the_same_budget():
    assert memory.plan(3 << 30, IMAGE_224 // 4).batch == 4 * memory.plan(3 << 30, IMAGE_224).batch


def test_a_stage_over_the_budget_is_a_warning_naming_it():
    stages = [{"stage": "reference (tf)", "peak_rss_mb": 2500.0, "child_peak_rss_mb": 700.0},
              {"stage": "export tflite fp32", "peak_rss_mb": 2000.0}]
    warnings = memory.over_budget(stages, 3 << 30)
    assert warnings == ["memory: stage 'reference (tf)' peaked at 3200 MB (process 2500 + child 700), "
                        "over --max-memory 3072 MB"]
    assert memory.over_budget(stages, None) == []


class _Watched:
    """An array whose reads are recorded in ``reads``: (input, start, stop) per slice taken."""

    def __init__(self, array, name, reads):
        self._array, self._name, self._reads = array, name, reads

    def __len__(self):
        return len(self._array)

    def __getitem__(self, key):
        self._reads.append((self._name, key.start, key.stop))
        return self._array[key]


def test_the_tflite_representative_dataset_hands_out_one_sample_at_a_time():
    """The TFLite converter's calibration was suspected of the Keras export's peak: its representative
    dataset is a generator of single samples, read as views, never the set at once."""
    reads = []
    calibration = Dataset({"a": _Watched(np.arange(10 * 3, dtype=np.float32).reshape(10, 3), "a", reads),
                           "b": _Watched(np.ones((10, 2), np.float32), "b", reads)})
    samples, count = _representative(calibration, ["a", "b"])
    generator = samples()
    first = next(generator)
    assert count == 10 and reads == [("a", 0, 1), ("b", 0, 1)] and first["a"].shape == (1, 3)  # nothing more yet
    rest = list(generator)
    assert len(rest) == 9 and all(s["a"].shape == (1, 3) and s["b"].shape == (1, 2) for s in rest)
    assert {stop - start for _, start, stop in reads} == {1}  # never a slice of several samples
    assert np.array_equal(rest[-1]["a"], np.arange(27, 30, dtype=np.float32)[None])


def test_each_stage_records_its_own_peak_not_the_process_high_water_mark():
    records = []
    with timed_step("large", records):
        large = np.ones(400 * MB // 8)  # touched: resident
    del large
    with timed_step("small", records):
        small = np.ones(40 * MB // 8)
    del small
    large, small = records
    assert large["peak_rss_mb"] - small["peak_rss_mb"] > 250
    assert "child_peak_rss_mb" not in large and "child_peak_rss_mb" not in small


def test_a_stage_records_the_peak_of_a_child_it_runs():
    records = []
    script = "import sys; block = b'x' * (300 << 20); print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        try:
            own_before = _status_mb("self", "VmRSS")  # (the test process: 2 GB late in the full suite)
            with timed_step("with a child", records):
                assert child.stdout.readline().strip() == b"ready"
        finally:
            child.communicate(b"")
    assert records[0]["child_peak_rss_mb"] >= 300
    assert records[0]["peak_rss_mb"] < own_before + 200  # the child's 300 MB are its own, not counted here


def _tiny_onnx(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_report_json_holds_each_stage_peak_the_children_and_the_memory_settings(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx")
    data = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    edgekit.export(str(model), eval=data, out=tmp_path / "b", measure_latency=False)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert all(s["peak_rss_mb"] > 0 for s in report["stages"])
    # The ONNX source's reference and the verification run in children: their peaks are recorded.
    assert stages["reference (onnx)"]["child_peak_rss_mb"] > 0 and stages["verify onnx-fp32"]["child_peak_rss_mb"] > 0
    assert "child_peak_rss_mb" not in stages["load source"]
    assert report["memory"] == {"max_memory_mb": None, "batch": 8, "child_batch": 64}
    assert "| child peak RSS (MB) |" in (tmp_path / "b" / "report.md").read_text()


def test_max_memory_changes_the_settings_and_a_stage_over_it_is_warned(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx")
    data = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    report = edgekit.export(str(model), eval=data, out=tmp_path / "b", measure_latency=False, max_memory="1M")
    assert report.memory == {"max_memory_mb": 1, "batch": 1, "child_batch": 1}
    assert any(w.startswith("memory: stage 'load source' peaked at") and w.endswith("over --max-memory 1 MB")
               for w in report.warnings)


@pytest.mark.parametrize("max_memory, batch", [(None, 64), ("1M", 1)])
def test_the_children_run_the_batches_the_plan_picked(tmp_path, monkeypatch, max_memory, batch):
    import edgekit.runtime._child as child
    import edgekit.verification as verification
    run, batches = child.run_isolated, []

    def recorded(*args, **kwargs):
        batches.append(kwargs["batch"])
        return run(*args, **kwargs)
    monkeypatch.setattr(child, "run_isolated", recorded)  # the ONNX source's probe and reference
    monkeypatch.setattr(verification, "run_isolated", recorded)
    data = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    edgekit.export(str(_tiny_onnx(tmp_path / "m.onnx")), eval=data, out=tmp_path / "b", measure_latency=False,
                   max_memory=max_memory)
    assert len(batches) == 3  # the probe (its own single sample), the reference, the verification
    assert batches[1:] == [batch, batch]
