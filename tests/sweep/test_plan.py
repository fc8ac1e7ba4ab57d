"""Sweep plans without Ray: cells and their export arguments, input hashes, and the errors a bad
plan gets (the field, what came, what was expected)."""

import inspect
import sys

import pytest

from edgekit.cli.main import main
from edgekit.errors import ConfigError, MissingDependencyError
from edgekit.sweep_plan import load_plan, with_hashes

from .conftest import MLP

TOML = """
out = "out"
targets = ["onnx", "tflite"]
precisions = ["fp32", "int8"]
profiles = ["host", "x86-avx2,arm64"]
[recipes]
search = {}
u8u8 = { weight-type = "u8", reduce-range = false }
[options]
calib = "calib.npz"
eval = "eval.npz"
[[models]]
model = "mlp.py:build_model"
no-latency = true
tol = ["int8.min_cosine=0.98", "fp32.max_accuracy_drop=0.1"]
resources = { cpus = 2, memory = "1.5GiB" }
"""


@pytest.fixture
def folder(tmp_path):
    for name in ("calib.npz", "eval.npz"):
        (tmp_path / name).write_bytes(b"data")
    (tmp_path / "mlp.py").write_text("def build_model(): ...\n")
    (tmp_path / "plan.toml").write_text(TOML)
    return tmp_path


def test_cells_are_the_product_of_the_axes_as_export_command_lines(folder):
    cells = {c.name: c for c in load_plan(folder / "plan.toml").cells}
    # fp32 cells take no recipe: a recipe only changes quantized artifacts.
    assert sorted(cells) == sorted(
        [f"mlp.{t}.fp32.{p}" for t in ("onnx", "tflite") for p in ("host", "x86-avx2+arm64")]
        + [f"mlp.{t}.int8.{r}.{p}" for t in ("onnx", "tflite") for r in ("search", "u8u8")
           for p in ("host", "x86-avx2+arm64")])
    cell = cells["mlp.tflite.int8.u8u8.x86-avx2+arm64"]
    assert cell.argv == (f"{folder / 'mlp.py'}:build_model", "--to=tflite", "--int8", "--target-cpu=x86-avx2,arm64",
                         f"--calib={folder / 'calib.npz'}", f"--eval={folder / 'eval.npz'}", "--no-latency",
                         "--no-reduce-range", "--tol=int8.min_cosine=0.98", "--tol=fp32.max_accuracy_drop=0.1",
                         "--weight-type=u8")
    assert (cell.cpus, cell.memory, cell.recipe, cell.profile) == (2.0, 3 << 29, "u8u8", "x86-avx2,arm64")
    assert set(cell.files) == {str(folder / n) for n in ("mlp.py", "calib.npz", "eval.npz")}
    assert "--int8" not in cells["mlp.onnx.fp32.host"].argv


def test_custom_objects_files_are_resolved_hashed_and_required(folder):
    (folder / "layers.py").write_text("class Scale: ...\n")
    (folder / "plan.toml").write_text(TOML.replace('no-latency = true', 'custom-objects = ["layers.py"]'))
    cell = load_plan(folder / "plan.toml").cells[0]
    assert f"--custom-objects={folder / 'layers.py'}" in cell.argv and str(folder / "layers.py") in cell.files
    (folder / "layers.py").unlink()
    with pytest.raises(ConfigError, match="custom-objects.*'layers.py' not found"):
        load_plan(folder / "plan.toml")


def test_yaml_and_toml_plans_make_the_same_cells(folder):
    yaml = pytest.importorskip("yaml")
    import tomllib
    (folder / "plan.yaml").write_text(yaml.safe_dump(tomllib.loads(TOML)))
    assert load_plan(folder / "plan.yaml") == load_plan(folder / "plan.toml")


def test_a_yaml_plan_without_pyyaml_says_what_to_install(folder, monkeypatch):
    (folder / "plan.yml").write_text("models: []\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(MissingDependencyError, match="PyYAML.*or write the plan as TOML"):
        load_plan(folder / "plan.yml")


def test_the_input_hash_follows_content_and_options_not_timestamps(folder):
    import os
    first = {c.name: c.input_hash for c in with_hashes(load_plan(folder / "plan.toml").cells)}
    assert len(set(first.values())) == len(first)  # every cell its own
    os.utime(folder / "calib.npz", (1, 1))
    assert {c.name: c.input_hash for c in with_hashes(load_plan(folder / "plan.toml").cells)} == first
    (folder / "calib.npz").write_bytes(b"other data")
    changed = {c.name: c.input_hash for c in with_hashes(load_plan(folder / "plan.toml").cells)}
    assert all(changed[name] != first[name] for name in first)
    (folder / "plan.toml").write_text(TOML.replace("no-latency = true", "no-latency = true\nseed = 1"))
    reseeded = {c.name: c.input_hash for c in with_hashes(load_plan(folder / "plan.toml").cells)}
    assert all(reseeded[name] != changed[name] for name in first)


@pytest.mark.parametrize("change, message", [
    (("out = \"out\"", "out = \"out\"\nmodles = []"), r"plan: unknown key 'modles'.*did you mean 'models'"),
    (("targets = [\"onnx\", \"tflite\"]", "targets = [\"onnx\", \"tflight\"]"),
     r"plan targets\[1\]: got 'tflight', expected one of .*did you mean 'tflite'"),
    (("precisions = [\"fp32\", \"int8\"]", "precisions = \"int4\""), r"plan precisions\[0\]: got 'int4'"),
    (("profiles = [\"host\", \"x86-avx2,arm64\"]", "profiles = [\"risc-v\"]"),
     r"plan profiles\[0\]: target_cpu 'risc-v'"),
    (("model = \"mlp.py:build_model\"", "modle = \"mlp.py:build_model\""),
     r"plan models\[0\]: unknown key 'modle'.*did you mean 'model'"),
    (("model = \"mlp.py:build_model\"", "name = \"x\""), r"plan models\[0\]: missing `model`"),
    (("model = \"mlp.py:build_model\"", "model = \"nope.py:build_model\""),
     r"plan models\[0\].model: 'nope.py' not found \(paths are relative to the plan's folder"),
    (("calib = \"calib.npz\"", "calib = \"calb.npz\""), r"plan options.calib: 'calb.npz' not found"),
    (("no-latency = true", "no-latency = \"yes\""), r"plan models\[0\].no-latency: expected true or false, got 'yes'"),
    (("no-latency = true", "seed = \"one\""), r"cell mlp\.onnx\.fp32\.host: argument --seed: invalid int value: 'one'"),
    (("no-latency = true", "weight_typ = \"u8\""), r"unknown key 'weight_typ'.*did you mean 'weight-type'"),
    (("no-latency = true", "to = \"onnx\""), r"plan models\[0\].to: set by targets"),
    (("u8u8 = {", "u8u8 = { int8 = true,"), r"plan recipes.u8u8.int8: set by precisions"),
    (("no-latency = true", "calib = [\"a\", \"b\"]"), r"plan models\[0\].calib: expected a path"),
    (("no-latency = true", "keep-fp32 = [\"conv*\", { a = 1 }]"),
     r"plan models\[0\].keep-fp32: expected a string or a number, got \{'a': 1\}"),
    (("no-latency = true", "prune = [0.5, 0.6]"), r"plan models\[0\].prune: expected one value, got a list"),
    (("no-latency = true", "weights = [\"w.pt\"]"), r"plan models\[0\].weights: expected a path"),
    (("memory = \"1.5GiB\"", "memory = \"lots\""), r"plan models\[0\].resources.memory: expected bytes"),
    (("cpus = 2", "cpus = \"2\""), r"plan models\[0\].resources.cpus: expected a number of CPUs > 0, got '2'"),
    (("[[models]]", "models = 3\n[[other]]"), r"plan: unknown key 'other'"),
])
def test_a_bad_plan_names_the_field_and_what_was_expected(folder, change, message):
    old, new = change
    assert old in TOML
    (folder / "plan.toml").write_text(TOML.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        load_plan(folder / "plan.toml")


def test_two_models_need_two_names(folder):
    entries = {"models": [{"model": "mlp.py:build_model"}, {"model": MLP}], "options": {"calib": "calib.npz"}}
    with pytest.raises(ConfigError, match=r"models\[1\]: name 'mlp' is taken by models\[0\]"):
        load_plan(entries, base=folder)


def test_the_cli_exits_2_on_a_bad_plan_before_starting_ray(folder, capsys, monkeypatch):
    import edgekit.sweep_run
    reached_ray = []
    monkeypatch.setattr(edgekit.sweep_run, "import_ray", reached_ray.append)
    (folder / "plan.toml").write_text(TOML.replace("targets = [\"onnx\", \"tflite\"]", "targets = [\"onx\"]"))
    assert main(["sweep", str(folder / "plan.toml")]) == 2
    assert "did you mean 'onnx'" in capsys.readouterr().err
    assert reached_ray == []
    assert main(["sweep"]) == 2  # neither a PLAN nor --report
    assert main(["sweep", str(folder / "plan.toml"), "--workers", "0"]) == 2


def test_edgekit_sweep_is_the_function_whatever_was_imported():
    """No module bears the function's name (edgekit.sweep_plan, sweep_run, sweep_report), so importing
    them cannot shadow it, as a module ``edgekit.sweep`` would."""
    import edgekit.sweep_plan  # noqa: F401
    import edgekit.sweep_report  # noqa: F401
    import edgekit.sweep_run  # noqa: F401
    assert inspect.isfunction(edgekit.sweep)
    assert list(inspect.signature(edgekit.sweep).parameters)[:2] == ["plan", "out"]
