"""What a file that failed to load actually is, from its first bytes, for error messages that say
what came (a text file named ``.npz``, an ``.npz`` given as weights) rather than a parser's complaint."""

import zipfile
from pathlib import Path


def describe(path) -> str:
    """"a text file", "a NumPy .npz archive", "a PyTorch checkpoint", ... or "" when unknown."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return ""
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (Keras .h5?)"
    if head[4:8] == b"TFL3":
        return "a TFLite model"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (a legacy torch.save file?)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file (starting {first!r})"
    return ""


def _zip_kind(path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a damaged zip file"
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy .npz archive"
    if any(n.endswith("/data.pkl") for n in names):
        return "a PyTorch checkpoint (torch.save)"
    if any(n.endswith(".pb") for n in names) or "config.json" in names:
        return "a zipped model (Keras .keras or SavedModel?)"
    return "a zip file"


def what_came(origin) -> str:
    """"; FILE is a text file (...)" for an error message, or "" (also for an origin that is not a
    path, such as an archive member)."""
    kind = describe(origin) if isinstance(origin, (str, Path)) else ""
    return f"; {origin} is {kind}" if kind else ""
