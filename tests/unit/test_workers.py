"""Parallel verification on a real local Ray: the profiles and the eval set's shards run as tasks,
and the verdict is the one a single process reaches, figure for figure."""

import numpy as np
import pytest

import edgekit.runtime as ekr
from edgekit import verify
from edgekit.cli.main import main
from edgekit.config import DEFAULT_TOLERANCES, Precision
from edgekit.data import load_data, validate
from edgekit.errors import ConfigError, ParityError
from edgekit.reference import ReferenceOutputs
from edgekit.runtime._records import plain
from edgekit.verification import EVAL_BATCH, evaluate, shards
from edgekit.workers import Workers


def test_shards_are_cut_on_batch_boundaries_and_cover_every_sample():
    for count in (1, 63, 64, 65, 360, 1000):
        for pieces in (1, 2, 3, 8):
            cut = shards(count, pieces)
            assert cut[0].start == 0 and cut[-1].stop == count and len(cut) <= pieces
            assert all(a.stop == b.start for a, b in zip(cut, cut[1:]))
            assert all(s.start % EVAL_BATCH == 0 for s in cut)
    assert [(s.start, s.stop) for s in shards(360, 2)] == [(0, 192), (192, 360)]


def test_a_bad_worker_count_is_refused_before_any_work(digits_bundle, digits_files):
    with pytest.raises(ConfigError, match="workers"):
        Workers(0)
    assert main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["eval"]), "--workers", "0"]) == 2


def _verdicts(report):
    return {a["id"]: {k: v for k, v in a["parity"].items() if k != "tolerance"} for a in report.artifacts}


@pytest.mark.slow
def test_sharded_parity_on_ray_equals_single_process_parity(openvino_bundle, digits_files, tmp_path, monkeypatch,
                                                            local_ray):
    """ONNX and OpenVINO IR (whose .bin travels with the .xml), fp32 and int8."""
    tasks = []
    real_map = Workers.map

    def counted(self, fn, items, **kwargs):
        items = list(items)
        tasks.append(len(items))
        return real_map(self, fn, items, **kwargs)
    monkeypatch.setattr(Workers, "map", counted)
    one = verify(openvino_bundle, digits_files["eval"], target_cpu="host")
    two = verify(openvino_bundle, digits_files["eval"], target_cpu="host", workers=2)
    assert tasks == [2, 2, 2, 2]  # each artifact: the eval set in two shards, as Ray tasks
    assert {a["format"] for a in two.artifacts} == {"onnx", "openvino"}
    assert _verdicts(two) == _verdicts(one)
    assert two.artifacts[0]["parity"]["samples"] == 360

    # A broken artifact is still a verdict (its task's failure), not a crash of the run.
    manifest = ekr.read_manifest(openvino_bundle)
    entry = manifest.artifact("onnx-int8").to_dict()
    broken = tmp_path / entry["file"]
    broken.write_bytes((openvino_bundle / entry["file"]).read_bytes()[:200])
    dataset = validate(load_data(digits_files["eval"], role="eval"), list(manifest.inputs), role="eval")
    reference = ReferenceOutputs.load(openvino_bundle, plain(manifest.reference))
    evaluate(entry, broken, dataset, reference, DEFAULT_TOLERANCES[Precision.INT8], list(manifest.inputs),
             latency=False, workers=Workers(2))
    assert entry["parity"]["passed"] is False and entry["parity"]["failures"][0].startswith("runtime error")


@pytest.mark.slow
def test_a_parallel_recipe_search_tries_and_ships_what_the_search_in_turn_does(tmp_path, local_ray):
    """Every recipe made up front and verified at once on Ray: the same figures per recipe, and
    the same recipe ships (the walk's rules on parallel results: tests/quantize/test_recipe_search)."""
    from tests.quantize.test_recipe_search import _export, _int8  # (the MLP, its tolerances)
    data = np.random.default_rng(0).standard_normal((96, 12)).astype(np.float32)
    with pytest.raises(ParityError) as in_turn:  # an impossible tolerance: every recipe fails, each recorded
        _export(tmp_path, data, "in-turn", 1)
    with pytest.raises(ParityError) as ahead:
        _export(tmp_path, data, "ahead", 1, workers=2)
    tried = [_int8(failed.value.report)["quantization"]["search"] for failed in (in_turn, ahead)]
    figures = [[(t["recipe"], t["scheme"], t["cosine"], t["passed"]) for t in search] for search in tried]
    assert len(figures[0]) == 4 and figures[1] == figures[0]
    best = int(np.argmax([t["cosine"] for t in tried[0]]))
    shipped = _int8(_export(tmp_path, data, "shipped", tried[0][best]["cosine"] - 1e-9, workers=2))
    assert shipped["quantization"]["recipe"] == tried[0][best]["recipe"]
    assert [t["passed"] for t in shipped["quantization"]["search"]] == [False] * best + [True]
    assert not list(tmp_path.glob("**/.recipe*"))  # no recipe left aside
