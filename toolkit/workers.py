"""Where the independent pieces of one export or verification run: here, one after another (the
default), or as Ray tasks — on an embedded local Ray with ``count`` CPUs, or on the cluster at
``address`` (``HOST:PORT`` or ``auto``). Ray is imported only when there is parallel work.

Tasks run module-level functions of edgekit, so every node needs the same environment (the same
edgekit and engines; an emulated profile's task needs the emulator on its node). What a task reads
travels with it (``shared``: put into Ray's object store once, whichever node runs the task), so no
shared storage is needed.
"""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ConfigError, MissingDependencyError


def import_ray(what: str):
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(f"{what} runs on Ray: pip install 'edgekit[ray]'") from exc
    return ray


def start(ray, address: str | None = None, cpus: int | None = None, verbose=False):
    """``ray.init``: joining the cluster at ``address``, else a new local Ray with ``cpus`` CPUs
    (default: all) — ``address="local"``, never one found through Ray's address file (a stale one
    made a plain ``ray.init()`` try to join a head stopped long ago)."""
    common = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if address is None:
        # edgekit sends no telemetry; Ray's usage statistics are on by default for the clusters it starts.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options = {**common, "address": "local", "num_cpus": cpus, "include_dashboard": False}
    else:
        options = {**common, "address": address}
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}. Is it running (ray status)? A cluster "
                          "with token authentication also needs RAY_AUTH_MODE=token here, and its token in "
                          "RAY_AUTH_TOKEN or ~/.ray/auth_token") from exc


_started_here = []  # the Ray that ``connect`` started in this process, stopped by ``session``


class WorkerLost(RuntimeError):
    """A task's worker process died (killed, out of memory, its node lost) more often than Ray retries."""


def connect(address: str | None = None, cpus: int | None = None, verbose=False, what="parallel verification"):
    """The ``ray`` module, initialised once per process (``start``), or as this process already did."""
    ray = import_ray(what)
    if not ray.is_initialized():
        start(ray, address, cpus, verbose)
        _started_here.append(True)
    return ray


@contextmanager
def session():
    """Within it, ``connect`` may start a Ray; on the way out that Ray is stopped (an export's or a
    verification's ends with it, so a later ``edgekit.sweep`` here can start its own). A Ray the
    caller started stays."""
    try:
        yield
    finally:
        if _started_here:
            _started_here.clear()
            import ray
            ray.shutdown()


@dataclass(frozen=True)
class Workers:
    """``count`` concurrent tasks (1: everything runs here, in turn) or the cluster at ``address``."""

    count: int = 1
    address: str | None = None

    def __post_init__(self):
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ConfigError(f"workers: expected a whole number >= 1, got {self.count!r}")

    @property
    def parallel(self) -> bool:
        return self.address is not None or self.count > 1

    def connect(self):
        """The Ray these workers run on (started or joined on first use)."""
        return connect(self.address, self.count)

    def slots(self) -> int:
        """How many tasks can run at once: ``count``, or the cluster's CPUs."""
        if self.address is None:
            return self.count
        return max(1, int(connect(self.address).cluster_resources().get("CPU", 1)))

    def map(self, fn, items, *, shared=None, on_result=None, here=None) -> list:
        """``[fn(*item, **shared) for item in items]``, in order; as Ray tasks (one CPU each) when
        parallel. ``here(index)``: that task must run on this machine's node (what it measures is
        this CPU's). ``on_result(done, total)`` as results come in. A task's exception is raised here
        as its own type, a lost worker as WorkerLost; either way, and on Ctrl-C, the tasks still
        running are cancelled."""
        items, shared = list(items), dict(shared or {})
        if not self.parallel:
            results = []
            for item in items:
                results.append(fn(*item, **shared))
                if on_result:
                    on_result(len(results), len(items))
            return results
        ray = self.connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        task = ray.remote(num_cpus=1, max_retries=1)(fn)
        stored = {name: ray.put(value) for name, value in shared.items()}
        node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        refs = [task.options(**({"scheduling_strategy": node} if here and here(i) else {})).remote(*item, **stored)
                for i, item in enumerate(items)]
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)  # (a timeout: Ctrl-C is seen)
                ray.get(ready)  # a failed task raises now, not after the others
                if ready and on_result:
                    on_result(len(refs) - len(pending), len(refs))
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from exc
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"{type(exc).__name__}: {exc}") from exc
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
