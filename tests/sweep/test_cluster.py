"""edgekit sweep through its entry point in a fresh process: joining a Ray head by address, and Ctrl-C.

The head is started with ``ray start --head --block`` in a session of its own and stopped by
signalling that process and its group only (``ray stop`` would stop every Ray on the machine).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import edgekit.runtime as ekr
from edgekit import sweep_report

from .conftest import MLP

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


def _free_ports(count) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _write_plan(path: Path, digits_files, recipes) -> Path:
    table = "\n".join(f"{name} = {{ {options} }}" for name, options in recipes.items())
    path.write_text(f"""
out = "out"
targets = ["onnx"]
profiles = ["host"]
[recipes]
{table}
[options]
calib = "{digits_files['calib']}"
eval = "{digits_files['eval']}"
isolate = false
[[models]]
name = "mlp"
model = "{MLP}"
""")
    return path


@pytest.fixture
def ray_head(request):
    """A Ray head on 127.0.0.1 with 2 CPUs, token authentication (a token of its own) and every
    port it opens chosen free; yields (address, environment for its clients, its temp folder)."""
    pytest.importorskip("ray")
    port, client, agent, agent_grpc, env_agent, metrics = _free_ports(6)
    temp = tempfile.mkdtemp(prefix="ekray-")  # short: Ray's Unix sockets live under it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
         f"--metrics-export-port={metrics}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started (2 s)
        head.wait(60)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of its session still there
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)
    request.addfinalizer(stop)
    deadline = time.monotonic() + 90
    while True:
        assert head.poll() is None, "ray start --head exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the Ray head did not come up in 90 s"
            time.sleep(0.5)
    return f"127.0.0.1:{port}", env, Path(temp)


def test_sweep_runs_on_a_ray_cluster_joined_by_address(ray_head, digits_files, tmp_path):
    address, env, temp = ray_head
    plan = _write_plan(tmp_path / "plan.toml", digits_files, {"u8u8": 'weight-type = "u8", reduce-range = false'})
    result = subprocess.run([sys.executable, "-m", "edgekit", "sweep", str(plan), "--address", address],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    cells = sweep_report.cells_dir(tmp_path / "out")
    record = json.loads((cells / "mlp.onnx.int8.u8u8.host.cell.json").read_text())
    assert record["status"] == "passed"
    assert sweep_report.intact(cells / "mlp.onnx.int8.u8u8.host", record["manifest_sha256"])
    # The cell ran on a worker of that head: Ray names each worker's log after its pid.
    pid = record["worker"].rsplit(":", 1)[1]
    logs = [p.name for p in temp.glob("session_*/logs/*")]
    assert any(name.endswith((f"-{pid}.out", f"_{pid}.log")) for name in logs), (pid, sorted(logs)[:20])
    assert "mlp.onnx.int8.u8u8.host" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_ctrl_c_stops_the_sweep_keeps_finished_bundles_and_names_the_cells_not_run(digits_files, tmp_path):
    recipes = {"search": "", "u8u8": 'weight-type = "u8", reduce-range = false', "pertensor": "per-channel = false"}
    plan = _write_plan(tmp_path / "plan.toml", digits_files, recipes)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    sweep = subprocess.Popen([sys.executable, "-m", "edgekit", "sweep", str(plan), "--workers", "1"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cells = sweep_report.cells_dir(tmp_path / "out")
    deadline = time.monotonic() + 300
    while not list(cells.glob("*.cell.json")):
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "no cell finished in 300 s"
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr
    # One cell at a time: one finished (rarely two, when the next ended just before the signal).
    done = [p.name.removesuffix(".cell.json") for p in cells.glob("*.cell.json")]
    finished = done[0]
    others = sorted({f"mlp.onnx.int8.{r}.host" for r in recipes} - set(done))
    line = next(line for line in stderr.splitlines() if "interrupted" in line)
    assert others and f"{len(others)} cells did not run" in line and all(name in line for name in others), stderr
    record = json.loads((cells / f"{finished}.cell.json").read_text())
    assert record["status"] == "passed" and ekr.read_manifest(cells / finished)
    assert sweep_report.intact(cells / finished, record["manifest_sha256"])
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert sorted(c["cell"] for c in board["cells"] if c["status"] == "not run") == others
