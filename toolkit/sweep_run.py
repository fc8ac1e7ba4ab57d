"""``edgekit.sweep(plan)``: every cell of a plan as a Ray task, then the leaderboard.

Ray, not a scheduler of our own: it places tasks by their declared resources (CPUs, memory), runs
them on this machine (an embedded ``ray.init``, nothing to set up) or on a cluster (``address``),
retries a task whose worker process died, and cancels what is outstanding on Ctrl-C.

Each cell runs ``edgekit export`` in a child process of its Ray worker: the plan's options are the
export command's, so the command itself parses them and maps its errors to its exit code (README,
Exit codes), which becomes the cell's verdict; and a converter that crashes, or the memory a
framework keeps, ends with the cell's process, not the worker's. A worker that dies mid-cell takes
its export with it (Ray ends a dead worker's children) and Ray runs the cell again, at most
``retries`` more times. Neither path leaves half a bundle: the export writes its bundle atomically,
and a bundle sent back to the driver (``transfer="driver"``) is unpacked into a staging folder and
swapped in by the same atomic writer (``edgekit.bundle``).

Where bundles are written:

- ``shared`` (default): the worker's export writes ``OUT/cells/NAME`` itself. Every node must see OUT
  (and the plan's model and data files) at the same path: one machine, or shared storage (NFS ...).
- ``driver``: the worker exports into a temporary folder of its own node and returns the bundle as
  the bytes of a tar; the driver writes it. For clusters whose nodes share no storage with the driver
  (the model and data files must still be readable on every node).
"""

import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import sweep_report
from .bundle import REJECTED_SUFFIX, check_output_dir, foreign_files, output_lock, owned_files, staged_bundle
from .errors import EXIT_INTERNAL, ConfigError, InputError  # (a killed cell or lost worker: internal)
from .sweep_plan import load_plan, with_hashes
from .sweep_report import ERROR, FAILED, PASSED, CellResult
from .workers import connect, import_ray, session

log = logging.getLogger("edgekit.sweep")
SHARED, DRIVER = "shared", "driver"
# Times Ray runs a cell again after its worker died (a node lost, the OOM killer); a cell whose
# export fails is never retried: the same inputs would fail the same way.
RETRIES = 2
LOG_LIMIT = 1 << 20   # the tail of an export's stderr kept in NAME.log


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the sweep: outstanding cells were cancelled, finished bundles kept.
    ``not_run`` names the cells without a result; ``leaderboard`` is the one written on the way out."""

    def __init__(self, not_run, leaderboard):
        super().__init__(f"sweep interrupted; {len(not_run)} cells did not run")
        self.not_run = not_run
        self.leaderboard = leaderboard


def sweep(plan, *, out=None, address=None, workers=None, transfer=SHARED, force=False, retries=RETRIES,
          on_cell=None, verbose=False) -> sweep_report.Leaderboard:
    """Run every cell of ``plan`` (a TOML/YAML file or a dict, see ``edgekit.sweep_plan``) whose inputs
    changed since its bundle was written (all of them with ``force``), write the leaderboard into
    ``out`` (default: the plan's ``out``) and return it.

    ``address``: a Ray cluster ("HOST:PORT" or "auto"); without it a local Ray with ``workers`` CPUs
    (default: all) is started and stopped here; a Ray this process already started is used as it is.
    ``on_cell(cell, result, skipped)`` is called as each cell finishes or is found unchanged.
    Raises SweepInterrupted on Ctrl-C, after the leaderboard of what finished is written.
    """
    plan = load_plan(plan)
    out = _out_dir(out if out is not None else plan.out)
    if transfer not in (SHARED, DRIVER):
        raise ConfigError(f"transfer: got {transfer!r}, expected {SHARED!r} or {DRIVER!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries: expected an integer >= 0, got {retries!r}")
    if address is not None and workers is not None:
        raise ConfigError("workers sizes a local Ray; a cluster joined by address has the CPUs of its nodes")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers: expected an integer >= 1, got {workers!r}")
    cells = with_hashes(plan.cells)
    for cell in cells:
        check_output_dir(sweep_report.cells_dir(out) / cell.name)  # foreign files: refused before any work
    sweep_report.write_plan(out, cells)
    todo = []
    for cell in cells:
        done = None if force else sweep_report.current(out, cell)
        if done is None:
            todo.append(cell)
        elif on_cell is not None:
            on_cell(cell, done, True)
    if todo:
        with _ray(address, workers, verbose) as ray:
            _check_fits(ray, todo)
            _execute(ray, todo, out, transfer, retries, on_cell)
    return sweep_report.write(out)


def _out_dir(out) -> Path:
    if out is None:
        raise ConfigError("no output folder: set `out` in the plan or pass out= (CLI: --out DIR)")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"sweep output {out} exists and is not a folder")
    sweep_report.cells_dir(out).mkdir(parents=True, exist_ok=True)
    return out


# --- Ray ----------------------------------------------------------------------------------------

@contextmanager
def _ray(address, workers, verbose):
    """The Ray to run on: this process's own when it already started one, else a cluster joined at
    ``address``, else a local one started here (and stopped on the way out)."""
    if import_ray("edgekit sweep").is_initialized() and (address is not None or workers is not None):
        raise ConfigError("Ray is already running in this process: address and workers apply to a Ray that "
                          "edgekit starts (call ray.shutdown() first, or leave them unset)")
    with session():
        yield connect(address, workers, verbose, what="edgekit sweep")


def _check_fits(ray, cells):
    """A cell asking for more CPUs or memory than any node has would wait forever: refuse it now."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    memory = max((n.get("memory", 0) for n in nodes), default=0)
    for cell in cells:
        if cell.cpus > cpus:
            raise ConfigError(f"cell {cell.name} declares cpus = {cell.cpus:g}; the largest Ray node has {cpus:g} "
                              "(resources.cpus in the plan; --workers sets a local Ray's CPUs)")
        if cell.memory is not None and cell.memory > memory:
            raise ConfigError(f"cell {cell.name} declares memory = {cell.memory} bytes; the largest Ray node "
                              f"offers {memory:.0f} (resources.memory in the plan)")


def _execute(ray, cells, out, transfer, retries, on_cell):
    task = ray.remote(run_cell)
    destination = None if transfer == DRIVER else str(sweep_report.cells_dir(out))
    pending = {}
    for cell in cells:
        options = {"num_cpus": cell.cpus, "max_retries": retries, "retry_exceptions": False,
                   "name": f"edgekit-sweep:{cell.name}"}
        if cell.memory is not None:
            options["memory"] = cell.memory
        pending[task.options(**options).remote(cell, destination)] = cell
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # (a timeout: Ctrl-C is seen)
            for ref in ready:
                cell = pending[ref]
                result = _collect(ray, ref, cell, out, retries)
                del pending[ref]  # (only now: a cell interrupted while its bundle is written did not run)
                if on_cell is not None:
                    on_cell(cell, result, False)
    except KeyboardInterrupt as exc:
        _cancel(ray, pending)
        raise SweepInterrupted([c.name for c in pending.values()], sweep_report.write(out)) from exc
    except BaseException:  # a bug here: the cells still running on the cluster stop too
        _cancel(ray, pending)
        raise


def _cancel(ray, pending):
    for ref in pending:
        ray.cancel(ref, force=True)  # (force: an export busy in native code ignores a polite cancel)


def _collect(ray, ref, cell, out, retries) -> CellResult:
    """The cell's result, its bundle written when it came as bytes, its record on disk."""
    try:
        outcome = ray.get(ref)
    except ray.exceptions.RayError as exc:
        # The worker died more than ``retries`` times, its node was lost, or the task itself raised.
        result = CellResult(name=cell.name, status=ERROR, exit_code=EXIT_INTERNAL, input_hash=cell.input_hash,
                            error=f"its Ray task failed (retried up to {retries} times when a worker died): "
                                  f"{type(exc).__name__}: {exc}")
        sweep_report.write_result(out, result, "")
        return result
    result = outcome.result
    if outcome.packed is not None:
        try:
            receive(outcome.packed, sweep_report.cells_dir(out) / cell.name, rejected=outcome.rejected)
        except (InputError, ConfigError, OSError) as exc:  # this cell's bundle, not the sweep, failed
            result = dataclasses.replace(result, status=ERROR, exit_code=EXIT_INTERNAL, manifest_sha256="",
                                         error=f"its bundle could not be written here: {exc}")
    sweep_report.write_result(out, result, outcome.log)
    return result


# --- on the worker ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellOutcome:
    result: CellResult
    log: str                       # the export's stderr (its tail)
    packed: bytes | None = None    # the bundle folder as a tar (transfer="driver")
    rejected: bool = False         # ... a failing candidate, to go to NAME.rejected


def run_cell(cell, destination=None) -> CellOutcome:
    """Ray task: run the cell's ``edgekit export`` into ``destination`` (the shared cells folder), or,
    with None, into a temporary folder and return the bundle's bytes."""
    if destination is not None:
        return _export(cell, Path(destination))
    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as folder:
        outcome = _export(cell, Path(folder))
        written = _written(Path(folder) / cell.name, outcome.result.exit_code, cell.argv)
        if written is None:
            return outcome
        return CellOutcome(outcome.result, outcome.log, pack(written), written.name.endswith(REJECTED_SUFFIX))


def _export(cell, folder: Path) -> CellOutcome:
    bundle, started = folder / cell.name, time.monotonic()
    process = subprocess.run([sys.executable, "-m", "edgekit", "export", *cell.argv, f"--out={bundle}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, errors="replace")
    code, stderr = process.returncode, process.stderr[-LOG_LIMIT:]
    status = PASSED if code == 0 else FAILED if code == 1 else ERROR
    result = CellResult(
        name=cell.name, status=status, exit_code=code if code >= 0 else EXIT_INTERNAL, input_hash=cell.input_hash,
        seconds=round(time.monotonic() - started, 2), error=_error(code, stderr),
        failures=tuple(_failures(_written(bundle, code, cell.argv))) if status == FAILED else (),
        manifest_sha256=_manifest_sha256(bundle) if status == PASSED else "",
        worker=f"{socket.gethostname()}:{os.getpid()}")
    return CellOutcome(result, stderr)


def _written(bundle: Path, code: int, argv) -> Path | None:
    """The folder an export that exited with ``code`` wrote: the bundle when it passed (or failed with
    --allow-partial), the rejected candidate when it failed its gate, none when it stopped."""
    if code == 0 or (code == 1 and "--allow-partial" in argv):
        folder = bundle
    elif code == 1:
        folder = bundle.with_name(bundle.name + REJECTED_SUFFIX)
    else:
        return None
    return folder if (folder / "report.json").is_file() else None


def _error(code: int, stderr: str) -> str:
    """Why an export stopped, in its own words: its last ``edgekit:`` line."""
    if code in (0, 1):
        return ""  # (a failed gate is told by its failures)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-code}"
        return f"the export was killed by {name} (out of memory?)"
    said = [line for line in stderr.splitlines() if line.startswith("edgekit: ")]
    return said[-1].removeprefix("edgekit: ").removeprefix("error: ") if said else f"exit code {code}"


def _failures(folder: Path | None) -> list:
    """The failures its report lists (``[]`` when it wrote no readable report)."""
    if folder is None:
        return []
    try:
        return list(json.loads((folder / "report.json").read_text()).get("failures", []))
    except (OSError, ValueError, AttributeError):
        return []


def _manifest_sha256(bundle: Path) -> str:
    from edgekit.runtime import MANIFEST_NAME, sha256_file
    return sha256_file(bundle / MANIFEST_NAME)


# --- bundles as bytes ---------------------------------------------------------------------------

def pack(folder: Path) -> bytes:
    """A bundle folder (flat: files only) as an uncompressed tar; model files compress poorly."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(Path(folder).iterdir()):
            tar.add(path, arcname=path.name, recursive=False)
    return buffer.getvalue()


def receive(data: bytes, target: Path, rejected=False):
    """Write a packed bundle to ``target`` (or ``target.rejected``) as the export writes one: into a
    staging folder beside it, checked, then swapped in atomically. A damaged tar leaves nothing."""
    with output_lock(target), staged_bundle(target) as staging:
        _unpack(data, staging.path)
        if owned_files(staging.path) is None or foreign_files(staging.path):
            raise InputError(f"the bundle sent back for {target.name} is not a whole edgekit bundle")
        if rejected:
            staging.reject()
        else:
            staging.commit()


def _unpack(data: bytes, folder: Path):
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isfile() or member.name != Path(member.name).name or member.name.startswith("."):
                    raise InputError(f"the bundle sent back holds {member.name!r}; expected plain files only")
                with tar.extractfile(member) as source, open(folder / member.name, "xb") as copy:
                    shutil.copyfileobj(source, copy)
    except (tarfile.TarError, OSError) as exc:  # (OSError: a name twice, or an empty one)
        raise InputError(f"the bundle sent back is not a readable tar of a bundle: {exc}") from exc
