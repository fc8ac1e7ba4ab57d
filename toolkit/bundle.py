"""Atomic bundle writing: build in a staging folder beside the target, then swap it in.

The rules, each tested (tests/unit/test_bundle.py):

- A failed or interrupted export leaves the previous bundle intact, never a half-written one.
  The staging folder lives in the same parent, and the swap is one ``renameat2(RENAME_EXCHANGE)``
  on Linux, so there is no moment at which ``--out`` holds no bundle. Elsewhere it is two renames,
  and a run killed between them is repaired by the next one.
- edgekit never deletes a file it did not write. A folder is replaced only when it is an edgekit
  bundle (its ``manifest.json`` parses as one) holding nothing but the files its manifest owns;
  anything else (a file added, or one changed since: its sha256) is refused before any work and
  checked again just before the swap. After the swap the previous bundle's files are removed by
  name from its manifest, unchanged ones only, through a folder descriptor opened without
  following symlinks; anything left is kept under ``OUT.kept-*``, never deleted.
- One export at a time per output folder: a lock file beside it (``.NAME.edgekit-lock``, held
  with ``flock`` for the whole export) turns a second export into a clear error.
"""

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path

import edgekit.runtime as ekr

from .errors import ConfigError

log = logging.getLogger("edgekit.bundle")
REJECTED_SUFFIX = ".rejected"
REPORT_FILES = ("report.json", "report.md", "report.html")


def write_atomic(path, text: str):
    """Write ``text`` to ``path`` through a temporary file beside it and a rename: a reader sees the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def check_output_dir(out: Path) -> Path:
    """Fail before any work if ``out`` (or ``out.rejected``) cannot receive a bundle."""
    out = Path(out).absolute()
    if not out.name or out.name in (".", ".."):
        raise ConfigError(f"--out {out}: expected a folder with a name, not a file-system root")
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: parent folder {parent} does not exist")
    for path in (out, out.with_name(out.name + REJECTED_SUFFIX)):
        _check_replaceable(path)
    return out


def _check_replaceable(path: Path):
    if path.is_symlink():
        raise ConfigError(f"--out {path} is a symlink (to {os.readlink(path)}); give a real folder path")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; refusing to replace it")
    if path.is_dir():
        foreign = foreign_files(path)
        if foreign:
            shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
            raise ConfigError(f"{path} holds files edgekit did not write ({shown}); refusing to replace it. "
                              "Move them out (calibration/eval data and models belong outside the bundle) "
                              "or choose another --out")


def owned_files(bundle: Path) -> dict | None:
    """The files a bundle's manifest says edgekit wrote, name -> sha256 (None for the manifest and
    reports, which carry none), or None when it is not an edgekit bundle."""
    try:
        manifest = ekr.read_manifest(bundle)
    except ekr.ModelLoadError:
        return None
    owned = {ekr.MANIFEST_NAME: None, **dict.fromkeys(REPORT_FILES)}
    records = [(r["file"], r.get("sha256")) for r in
               [manifest.reference, *(a.reference for a in manifest.artifacts if a.reference is not None)]]
    for artifact in manifest.artifacts:
        records += [(artifact.file, artifact.sha256), *((c.file, c.sha256) for c in artifact.companions)]
    if manifest.golden:
        records.append((manifest.golden["file"], manifest.golden["sha256"]))
    for name, sha256 in records:
        if Path(name).name == name:
            owned[name] = sha256 or None
    return owned


def _is_owned(folder: Path, name: str, owned: dict) -> bool:
    """``name`` is a regular file edgekit wrote there, unchanged since (its sha256, where recorded)."""
    path = folder / name
    if name not in owned or path.is_symlink() or not path.is_file():
        return False
    return owned[name] is None or ekr.sha256_file(path) == owned[name]


def foreign_files(folder: Path) -> list:
    """Entries of ``folder`` that edgekit did not write or that changed since (every entry, when it
    is not a bundle)."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    owned = owned_files(folder)
    if owned is None:
        return entries
    return [name for name in entries if not _is_owned(folder, name, owned)]


# --- the swap ---------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    """libc's ``renameat2`` (glibc >= 2.28), or None where the OS or libc has none."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the OS or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: the file system has no exchange
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _replace_dir(staging: Path, target: Path):
    """Put ``staging`` at ``target``; the previous bundle there loses only the files it owned."""
    if not target.exists():
        os.rename(staging, target)
        return
    _check_replaceable(target)  # again: files may have appeared during the export
    owned = owned_files(target) or {}
    old = target.with_name(_temp_name(target, "old"))
    with _signals_held():  # Ctrl-C between the two steps would leave the old bundle at the staging path
        if exchange(staging, target):
            os.rename(staging, old)  # the previous bundle, now at the staging path
        else:
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)
                raise
    if not remove_owned(old, owned):
        # Files appeared in (or replaced) the previous bundle during the swap: keep them under a
        # visible name that no later cleanup touches.
        kept = target.with_name(f"{target.name}.kept-{uuid.uuid4().hex[:8]}")
        os.rename(old, kept)
        log.warning("files edgekit did not write were found in the previous bundle; kept at %s", kept)


@contextmanager
def _signals_held():
    """Defer SIGINT/SIGTERM for a few system calls (main thread, POSIX); elsewhere a no-op."""
    import signal
    import threading
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_owned(folder: Path, owned: dict) -> bool:
    """Delete the files edgekit wrote (unchanged, by their sha256), then the folder if that emptied
    it; keep anything else. Works through a descriptor of the folder opened without following a
    symlink, so a folder swapped for a link never has its target's files deleted. Returns whether
    the folder is gone."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # not a real folder (a symlink put in its place): touch nothing
    try:
        for name, digest in owned.items():
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and (digest is None or _sha256_at(fd, name) == digest):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        folder.rmdir()
        return True
    except OSError:
        return False


def _sha256_at(dir_fd, name) -> str:
    with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd), "rb") as fh:
        return ekr.sha256_file(fh)


# --- staging folders and their leftovers --------------------------------------------------------

def _temp_name(out: Path, kind: str) -> str:
    return f".{out.name}.edgekit-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale_staging(out: Path):
    """Staging folders of runs that were killed (SIGKILL, power loss) cannot clean up after themselves.

    Names are matched literally (a ``--out`` with ``*`` or ``[`` in it is not a pattern), and only
    folders of processes that no longer exist are touched.
    """
    own = re.compile(re.escape(f".{out.name}.edgekit-") + r"(tmp|old)-(\d+)-[0-9a-f]{8}")
    for path in out.parent.iterdir():
        match = own.fullmatch(path.name)
        if not match or path.is_symlink() or not path.is_dir():
            continue
        try:
            os.kill(int(match.group(2)), 0)
            continue  # its export is still running
        except (ProcessLookupError, OverflowError):
            pass
        except PermissionError:
            continue
        owned = owned_files(path)
        if match.group(1) == "old" and not out.exists():
            os.rename(path, out)  # killed between the two renames: put the previous bundle back
        elif owned is None and match.group(1) == "tmp":
            shutil.rmtree(path, ignore_errors=True)  # a staging folder without a manifest: only edgekit wrote it
        elif not remove_owned(path, owned or {}):
            log.warning("left %s: it holds files edgekit did not write", path)


@contextmanager
def output_lock(out: Path):
    """Hold ``.NAME.edgekit-lock`` beside ``out`` for a whole export; a second export fails at once.

    The lock file is removed (while still locked) when the export ends; a run that finds the file
    replaced after locking it lost a race with that removal and tries again.
    """
    out = Path(out).absolute()
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the swap is still atomic
        yield
        return
    path = out.with_name(f".{out.name}.edgekit-lock")
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigError(f"another export is writing {out} (lock {path.name} is held); "
                              "wait for it to finish or choose another --out") from exc
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise ConfigError(f"cannot lock {path}: it keeps being replaced")
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # removed by hand meanwhile: nothing to clean
        finally:
            os.close(fd)


@contextmanager
def staged_bundle(out: Path):
    """Yield a staging folder; on success the caller calls ``commit`` or ``reject`` on it."""
    out = Path(out).absolute()
    _remove_stale_staging(out)
    staging = out.with_name(_temp_name(out, "tmp"))
    staging.mkdir()
    handle = _Staged(staging, out)
    try:
        yield handle
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # only edgekit wrote there


def _fsync_tree(root: Path):
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


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
        with output_lock(target):  # an export whose --out is DIR.rejected may be writing it
            _remove_stale_staging(target)
            _replace_dir(self.path, target)
        return target
