"""Reading ``.npz``/``.npy`` files that may be hostile, with bounded memory and no unpickling.

``np.load`` trusts the sizes a file declares: a 4 MB ``.npz`` can inflate past 3 GB, and a header
declaring shape ``(2**40,)`` makes numpy allocate before it reads. Here the zip directory and each
member's ``.npy`` header are read first, and no array data is read until:

- the file is a regular file (a FIFO would block the reader forever) no larger than the cap;
- the array bytes declared (the zip's sizes and each ``.npy`` header, which must agree) total at
  most the cap: ``EDGEKIT_MAX_ARRAY_BYTES`` in the environment, in bytes, default 2 GiB;
- each member is stored or deflated (what numpy writes), unencrypted, and inflates at most
  1100-fold (deflate cannot pass 1032:1, so a member claiming more lies about its sizes);
- every array is plain numbers (bool, integer, float, complex): object arrays would need
  unpickling and are refused, as ``np.load(allow_pickle=False)`` refuses them.

Every refusal is an InputError naming the file, the sizes, the cap and what to do.
"""

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._filekind import what_came
from .errors import ConfigError, InputError

MAX_BYTES_ENV = "EDGEKIT_MAX_ARRAY_BYTES"
DEFAULT_MAX_BYTES = 2 << 30
MAX_INFLATE_RATIO = 1100
MAX_MEMBERS = 4096        # one array per model input or output; thousands means something else
_MAX_HEADER_CHARS = 10_000  # numpy's own default for max_header_size
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_NUMERIC_KINDS = "biufc"
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


def max_array_bytes() -> int:
    """The cap on the array bytes one file may hold (``EDGEKIT_MAX_ARRAY_BYTES``, default 2 GiB)."""
    text = os.environ.get(MAX_BYTES_ENV)
    if text is None:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError as exc:
        raise ConfigError(f"{MAX_BYTES_ENV}: expected a whole number of bytes (e.g. {DEFAULT_MAX_BYTES} "
                          f"for 2 GiB), got {text!r}") from exc
    if value <= 0:
        raise ConfigError(f"{MAX_BYTES_ENV}: expected a number of bytes > 0, got {value}")
    return value


def load_npz(path, *, role: str) -> dict:
    """The arrays of an ``.npz`` by name (the member name without ``.npy``)."""
    with open_array_file(path, role=role) as fh:
        return read_npz(fh, path, role=role)


def load_npy(path, *, role: str) -> np.ndarray:
    with open_array_file(path, role=role) as fh:
        return read_npy(fh, path, role=role)


def open_array_file(path, *, role: str):
    """Open ``path`` for reading once it is known to be a regular file within the cap (the runtime's
    ``open_regular``: O_NONBLOCK, so a FIFO cannot block the open, then fstat of what was opened)."""
    from edgekit.runtime import ModelLoadError
    from edgekit.runtime._manifest import open_regular
    path = Path(path)
    try:
        fh = open_regular(path)
    except FileNotFoundError as exc:
        raise InputError(f"{role}: {path} does not exist") from exc
    except ModelLoadError as exc:
        raise InputError(f"{role}: {exc}; expected a .npz or .npy file") from exc
    except OSError as exc:
        raise InputError(f"{role}: cannot open {path}: {exc}") from exc
    size, cap = os.fstat(fh.fileno()).st_size, max_array_bytes()
    if size > cap:
        fh.close()
        raise InputError(f"{role}: {path} is {_size(size)}, more than the {_size(cap)} cap on array "
                         f"data ({MAX_BYTES_ENV}); pass a smaller file or raise the cap")
    return fh


def read_npz(fh, origin, *, role: str) -> dict:
    """The arrays of the ``.npz`` open as ``fh``, once its sizes are checked (see the module)."""
    cap = max_array_bytes()
    try:
        with zipfile.ZipFile(fh) as archive:
            members = _checked_members(archive, origin, role, cap)
            for info in members:
                with archive.open(info) as member:
                    _check_declared(member, f"{origin} member {info.filename!r}", info.file_size, cap, role)
            return {info.filename[:-len(".npy")]: _read_member(archive, info) for info in members}
    except _READ_ERRORS as exc:
        raise InputError(f"{role}: {origin} is not a readable .npz file: {exc}{what_came(origin)}") from exc


def read_npy(fh, origin, *, role: str) -> np.ndarray:
    """The array of the ``.npy`` open as ``fh``, once its header is checked against the file size."""
    try:
        _check_declared(fh, str(origin), os.fstat(fh.fileno()).st_size, max_array_bytes(), role)
        fh.seek(0)
        return np.lib.format.read_array(fh, allow_pickle=False, max_header_size=_MAX_HEADER_CHARS)
    except _READ_ERRORS as exc:
        raise InputError(f"{role}: {origin} is not a readable .npy file: {exc}{what_came(origin)}") from exc



def _checked_members(archive, origin, role, cap) -> list:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise InputError(f"{role}: {origin} holds {len(members)} files; expected at most {MAX_MEMBERS} arrays")
    names = [info.filename for info in members]
    if len(set(names)) != len(names) or not all(name.endswith(".npy") for name in names):
        raise InputError(f"{role}: {origin}: expected uniquely named .npy arrays (as np.savez writes), "
                         f"got members {names[:8]}")
    for info in members:
        _check_member(info, f"{role}: {origin} member {info.filename!r}")
    total = sum(info.file_size for info in members)
    if total > cap:
        raise InputError(f"{role}: {origin} holds {_size(total)} of arrays once decompressed "
                         f"({_size(sum(i.compress_size for i in members))} compressed), more than the "
                         f"{_size(cap)} cap ({MAX_BYTES_ENV}); pass less data or raise the cap")
    return members


def _check_member(info, where):
    if info.flag_bits & 0x1:
        raise InputError(f"{where} is encrypted; expected plain np.savez output")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InputError(f"{where} uses zip compression method {info.compress_type}; expected stored "
                         "or deflated (np.savez / np.savez_compressed)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise InputError(f"{where} is stored uncompressed but the zip directory gives it two sizes, "
                         f"{_size(info.file_size)} and {_size(info.compress_size)}: the file is damaged or "
                         "forged; save the arrays again with np.savez")
    if info.file_size > max(info.compress_size, 1) * MAX_INFLATE_RATIO:
        raise InputError(f"{where} claims {_size(info.file_size)} from {_size(info.compress_size)} compressed, "
                         f"more than deflate can produce (at most {MAX_INFLATE_RATIO}x): its sizes are forged; "
                         "save the arrays again with np.savez")


def _check_declared(fh, where, holds, cap, role):
    """Read the ``.npy`` header at the start of ``fh``; refuse it unless its array is plain numbers
    and the bytes it declares fit the cap and equal ``holds``, the size the container gives."""
    version = np.lib.format.read_magic(fh)
    if version not in _HEADER_READERS:
        raise InputError(f"{role}: {where} uses .npy format {version}; expected 1.0 or 2.0 "
                         "(np.save of a plain numeric array)")
    shape, _, dtype = _HEADER_READERS[version](fh, max_header_size=_MAX_HEADER_CHARS)
    if dtype.hasobject:
        raise InputError(f"{role}: {where} holds Python objects (dtype {dtype}), which cannot be read without "
                         "unpickling; save plain numeric arrays")
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{role}: {where} has dtype {dtype}; expected plain numeric arrays "
                         "(bool, integer, float or complex)")
    if any(d < 0 for d in shape):
        raise InputError(f"{role}: {where} declares shape {shape}; expected sizes >= 0")
    declared = fh.tell() + math.prod(shape) * dtype.itemsize
    if declared > cap:
        raise InputError(f"{role}: {where} declares an array of shape {shape} {dtype} ({_size(declared)}), "
                         f"more than the {_size(cap)} cap ({MAX_BYTES_ENV}); pass less data or raise the cap")
    if declared != holds:
        raise InputError(f"{role}: {where} declares shape {shape} {dtype} ({_size(declared)}) but holds "
                         f"{_size(holds)}: the file is damaged or forged; save it again with np.save/np.savez")


def _read_member(archive, info) -> np.ndarray:
    # The zip stream ends at the size checked above, and its CRC is verified at the end.
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False, max_header_size=_MAX_HEADER_CHARS)


def _size(count: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count} bytes)"
    return f"{count} bytes"
