"""edgekit sweep on a real local Ray (2 CPUs): every bundle and the leaderboard, skipped re-runs,
--force, failing cells beside passing ones, bundles sent back to the driver, a worker killed mid-cell."""

import json
import os
import re
import shutil
import signal
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit import sweep_report
from edgekit.cli.main import main

from .conftest import plan

pytestmark = pytest.mark.usefixtures("local_ray")
GRID = {"targets": ["onnx", "openvino"],
        "recipes": {"search": {}, "u8u8": {"weight-type": "u8", "reduce-range": False}}}


class Calls(list):
    """``on_cell`` that keeps (cell name, result, skipped)."""

    def __call__(self, cell, result, skipped):
        self.append((cell.name, result, skipped))


@pytest.fixture(scope="module")
def grid(tmp_path_factory, digits_files, local_ray):
    """Two models × two formats × two recipes, int8: 8 cells, swept once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    calls = Calls()
    started = time.monotonic()
    board = edgekit.sweep(plan(digits_files, **GRID), out=out, on_cell=calls)
    print(f"8-cell sweep: {time.monotonic() - started:.0f} s")
    return out, board, calls


def _bundle_files(out) -> dict:
    """Every file of every cell folder, name -> (mtime, sha256)."""
    cells = sweep_report.cells_dir(out)
    return {str(p.relative_to(cells)): (p.stat().st_mtime_ns, ekr.sha256_file(p))
            for p in sorted(cells.rglob("*")) if p.is_file() and p.parent != cells}


def test_sweep_writes_every_bundle_and_the_leaderboard(grid):
    out, board, calls = grid
    names = {f"{m}.{t}.int8.{r}.host" for m in ("cnn", "mlp") for t in ("onnx", "openvino") for r in ("search", "u8u8")}
    assert sorted(name for name, _, _ in calls) == sorted(names)
    assert all(result.status == "passed" and not skipped for _, result, skipped in calls), calls
    for name in names:
        bundle = sweep_report.cells_dir(out) / name
        manifest = ekr.read_manifest(bundle)
        fmt = name.split(".")[1]
        assert [a.id for a in manifest.artifacts] == [f"{fmt}-fp32", f"{fmt}-int8"]
        record = json.loads((bundle.parent / f"{name}.cell.json").read_text())
        assert record["manifest_sha256"] == ekr.sha256_file(bundle / "manifest.json")
        assert sweep_report.intact(bundle, record["manifest_sha256"])
    argv = {cell["name"]: cell["argv"] for cell in json.loads((out / "sweep-plan.json").read_text())}
    assert {name for name in names if "--weight-type=u8" in argv[name]} == {n for n in names if "u8u8" in n}
    assert board.passed and board.exit_code == 0
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved == json.loads(board.to_json())
    assert [(g["model"], g["profile"]) for g in saved["groups"]] == [("cnn", "host"), ("mlp", "host")]
    for group in saved["groups"]:
        rows = group["artifacts"]
        # Each file once: the fp32 artifact every int8 cell's bundle also holds is not repeated.
        assert len({r["sha256"] for r in rows}) == len(rows) and all(r["passed"] for r in rows)
        # (the fp32 export is byte for byte the same in the two recipe cells of a target: 2 rows, not 4)
        assert sum(r["precision"] == "int8" for r in rows) == 4 and len(rows) == 6
        assert group["quality"] == "accuracy"
        # The front is exactly the rows no other row beats on accuracy, latency and size at once.
        figures = [(r["accuracy"], -r["latency_ms"], -r["size_bytes"]) for r in rows]
        beaten = {i for i, mine in enumerate(figures) for other in figures
                  if other != mine and all(o >= m for o, m in zip(other, mine))}
        assert [r["pareto"] for r in rows] == [i not in beaten for i in range(len(rows))]
        fastest = min(rows, key=lambda r: r["latency_ms"])
        assert group["fastest"] == {"cell": fastest["cell"], "artifact": fastest["artifact"]}
        assert {r["recipe"] for r in rows} == {"search", "u8u8"}
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.startswith("# edgekit sweep: PASS") and all(name in markdown for name in names)
    figures = _html_figures((out / "leaderboard.html").read_text())
    for group in saved["groups"]:
        for row in group["artifacts"]:
            key = f"{row['cell']}/{row['artifact']}"
            assert figures[(key, "latency_ms")] == repr(row["latency_ms"])
            assert figures[(key, "size_bytes")] == repr(row["size_bytes"])
            assert figures[(key, "pareto")] == str(row["pareto"])


class _Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-figure" in attrs and "data-value" in attrs:
            self.figures[(attrs["data-artifact"], attrs["data-figure"])] = attrs["data-value"]


def _html_figures(text) -> dict:
    parser = _Figures()
    parser.feed(text)
    return parser.figures


def test_a_second_run_skips_every_cell_and_changes_nothing(grid, digits_files):
    out, _, _ = grid
    before = _bundle_files(out)
    calls = Calls()
    started = time.monotonic()
    board = edgekit.sweep(plan(digits_files, **GRID), out=out, on_cell=calls)
    assert len(calls) == 8 and all(skipped for _, _, skipped in calls)
    assert board.passed and _bundle_files(out) == before
    assert time.monotonic() - started < 30  # (hashing and reading 8 small bundles; no export ran)


def test_force_runs_an_unchanged_cell_again(grid, digits_files):
    out, _, _ = grid
    name = "mlp.onnx.int8.u8u8.host"
    old = json.loads((sweep_report.cells_dir(out) / f"{name}.cell.json").read_text())
    single = plan(digits_files, names=("mlp",), recipes={"u8u8": GRID["recipes"]["u8u8"]})
    calls = Calls()
    edgekit.sweep(single, out=out, on_cell=calls)
    assert [(n, skipped) for n, _, skipped in calls] == [(name, True)]  # the same cell: same name and hash
    edgekit.sweep(single, out=out, force=True, on_cell=calls)
    assert [(n, skipped) for n, _, skipped in calls[1:]] == [(name, False)]
    new = json.loads((sweep_report.cells_dir(out) / f"{name}.cell.json").read_text())
    assert new["input_hash"] == old["input_hash"] and new["status"] == "passed"
    assert new["manifest_sha256"] != old["manifest_sha256"]  # a new bundle (its manifest's creation time)


def test_report_rebuilds_the_leaderboard_from_disk(grid, digits_files, tmp_path, capsys):
    out, _, _ = grid
    edgekit.sweep(plan(digits_files, **GRID), out=out)  # (the plan of the grid again, after the --force test)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for suffix in ("json", "md", "html"):
        (copy / f"leaderboard.{suffix}").unlink()
    assert main(["sweep", "--report", str(copy), "--json"]) == 0
    rebuilt = json.loads(capsys.readouterr().out)
    original = json.loads((out / "leaderboard.json").read_text())
    assert rebuilt["groups"] == original["groups"] and rebuilt["cells"] == original["cells"]
    assert (copy / "leaderboard.html").is_file() and (copy / "leaderboard.md").is_file()
    # A bundle changed since it was written is not counted as done: its cell shows as not run.
    name = "cnn.onnx.int8.search.host"
    with open(copy / "cells" / name / "model.int8.onnx", "ab") as fh:
        fh.write(b"\0")
    assert main(["sweep", "--report", str(copy), "--json"]) == 4
    cells = {c["cell"]: c for c in json.loads(capsys.readouterr().out)["cells"]}
    assert cells[name]["status"] == "not run" and "changed" in cells[name]["error"]
    assert sum(c["status"] == "passed" for c in cells.values()) == 7


def test_failing_cells_are_recorded_while_the_others_finish_with_driver_transfer(digits_files, tmp_path, capsys):
    """Three cells, bundles sent back to the driver: one passes, one fails its gate (a cosine no int8
    reaches), one's model factory raises. The sweep exits 2 (the most severe cell's code)."""
    broken = tmp_path / "broken.py"
    broken.write_text("def build_model():\n    raise RuntimeError('this factory is broken on purpose')\n")
    (tmp_path / "plan.toml").write_text(f"""
out = "out"
targets = ["onnx"]
profiles = ["host"]
[options]
calib = "{digits_files['calib']}"
eval = "{digits_files['eval']}"
isolate = false
[[models]]
name = "good"
model = "{digits_files['factory']}"
weights = "{digits_files['weights']}"
[[models]]
name = "strict"
model = "{digits_files['factory']}"
weights = "{digits_files['weights']}"
tol = ["int8.min_cosine=1.0"]
search-budget = "1"
[[models]]
name = "broken"
model = "broken.py:build_model"
""")
    code = main(["sweep", str(tmp_path / "plan.toml"), "--transfer", "driver"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    cells = sweep_report.cells_dir(tmp_path / "out")
    progress = [line for line in captured.err.splitlines() if re.match(r"\[\d\] ", line)]
    assert sorted(re.sub(r": [\d.]+ s,", ":", line.split("] ", 1)[1]).split(":")[0] for line in progress) == [
        "broken.onnx.int8.default.host", "good.onnx.int8.default.host", "strict.onnx.int8.default.host"]
    assert any("good.onnx.int8.default.host" in line and line.endswith("PASS") for line in progress)
    assert any("strict.onnx.int8.default.host" in line and "FAIL: onnx-int8" in line for line in progress)
    assert any("broken.onnx.int8.default.host" in line and "ERROR (exit 2)" in line for line in progress)
    good = json.loads((cells / "good.onnx.int8.default.host.cell.json").read_text())
    assert good["status"] == "passed" and sweep_report.intact(cells / "good.onnx.int8.default.host",
                                                             good["manifest_sha256"])
    strict = json.loads((cells / "strict.onnx.int8.default.host.cell.json").read_text())
    assert strict["status"] == "failed" and strict["exit_code"] == 1
    assert any("cosine" in f and "< 1.0" in f for f in strict["failures"]), strict
    assert not (cells / "strict.onnx.int8.default.host").exists()
    assert ekr.read_manifest(cells / "strict.onnx.int8.default.host.rejected")  # the candidate, sent back too
    broken_record = json.loads((cells / "broken.onnx.int8.default.host.cell.json").read_text())
    assert broken_record["status"] == "error" and "broken on purpose" in broken_record["error"]
    assert "broken on purpose" in (cells / "broken.onnx.int8.default.host.log").read_text()
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| strict.onnx.int8.default.host | failed | onnx-int8" in markdown
    assert "| broken.onnx.int8.default.host | error |" in markdown and "broken on purpose" in markdown
    assert not list(cells.glob(".*edgekit-tmp*"))


def test_a_worker_killed_mid_cell_is_retried_and_leaves_no_partial_bundle(digits_files, tmp_path):
    """A watcher SIGKILLs the Ray worker running the cell while its export is writing the bundle's
    staging folder (named after the export's pid); Ray runs the cell again, which passes."""
    out = tmp_path / "out"
    cells = sweep_report.cells_dir(out)
    killed = {}

    def kill_the_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for staging in cells.glob(".mlp.onnx.int8.default.host.edgekit-tmp-*") if cells.is_dir() else ():
                export_pid = int(staging.name.split("-tmp-")[1].split("-")[0])
                try:
                    worker_pid = int(Path(f"/proc/{export_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):  # the export ended between the glob and the read
                    continue
                os.kill(worker_pid, signal.SIGKILL)
                killed.update(export=export_pid, worker=worker_pid, staging=staging)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_the_worker)
    watcher.start()
    calls = Calls()
    board = edgekit.sweep(plan(digits_files, names=("mlp",)), out=out, on_cell=calls)
    watcher.join()
    assert killed, "the watcher never saw the export's staging folder: the kill path did not run"
    [(name, result, _)] = calls
    assert result.status == "passed" and board.passed
    assert not result.worker.endswith(f":{killed['worker']}")  # another worker ran it again
    assert not Path(f"/proc/{killed['export']}").exists() or \
        Path(f"/proc/{killed['export']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert sweep_report.intact(cells / name, result.manifest_sha256)
    assert not killed["staging"].exists()  # the killed export's half-written folder, cleared by the retry
    assert not list(cells.glob(".*edgekit-tmp*"))


def test_a_damaged_transfer_writes_nothing(grid, tmp_path):
    """The driver side of transfer="driver": a whole tar becomes the bundle; a truncated one is an
    error that leaves neither the bundle folder nor a staging folder behind."""
    from edgekit.errors import InputError
    from edgekit.sweep_run import pack, receive
    out, _, _ = grid
    packed = pack(sweep_report.cells_dir(out) / "mlp.onnx.int8.search.host")
    with pytest.raises(InputError):
        receive(packed[: len(packed) // 2], tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []
    receive(packed, tmp_path / "bundle")
    record = json.loads((sweep_report.cells_dir(out) / "mlp.onnx.int8.search.host.cell.json").read_text())
    assert sweep_report.intact(tmp_path / "bundle", record["manifest_sha256"])
