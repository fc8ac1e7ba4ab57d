"""Atomic bundle writing: build in a staging folder beside the target, then swap it in.

A failed or interrupted export leaves the previous bundle intact (or nothing),
never a half-written one: the staging folder lives in the same parent (so the
final ``rename`` is atomic), is removed on any error, and the old bundle is only
deleted after the new one is in place.
"""

import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

from edgekit.runtime import MANIFEST_NAME

from .errors import ConfigError

log = logging.getLogger("edgekit.bundle")
REJECTED_SUFFIX = ".rejected"


def check_output_dir(out: Path) -> Path:
    """Fail before any work if ``out`` cannot receive a bundle."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"--out {out} is a symlink (to {os.readlink(out)}); give a real folder path")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that is not an edgekit bundle; "
                          "refusing to replace it (choose another path or empty it)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: parent folder {parent} does not exist")
    return out


def _fsync_tree(root: Path):
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _replace_dir(staging: Path, target: Path):
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.edgekit-old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_staging(out: Path):
    """Staging folders of runs that were killed (SIGKILL, power loss) cannot clean up after themselves."""
    for path in out.parent.glob(f".{out.name}.edgekit-*-*-*"):
        try:
            pid = int(path.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            if ".edgekit-old-" in path.name and not out.exists():
                os.rename(path, out)  # killed between the two renames: put the previous bundle back
            else:
                shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


@contextmanager
def staged_bundle(out: Path):
    """Yield a staging folder; on success the caller calls ``commit`` or ``reject`` on it."""
    out = Path(out).absolute()
    _remove_stale_staging(out)
    staging = out.with_name(f".{out.name}.edgekit-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    handle = _Staged(staging, out)
    try:
        yield handle
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


class _Staged:
    def __init__(self, path: Path, out: Path):
        self.path = path
        self.out = out

    def commit(self) -> Path:
        _fsync_tree(self.path)
        _replace_dir(self.path, self.out)
        log.info("bundle written to %s", self.out)
        return self.out

    def reject(self) -> Path:
        """Keep a failing candidate for inspection beside the bundle, never in its place."""
        target = self.out.with_name(self.out.name + REJECTED_SUFFIX)
        _replace_dir(self.path, target)
        return target
