"""Load ``file.py:name`` references: the user's own code, named explicitly on the command line."""

import importlib.util
import re
import sys
from pathlib import Path

from .errors import ConfigError, EdgekitError, InputError, UserCodeError

_REF = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def is_pyfile_ref(text) -> bool:
    return isinstance(text, str) and bool(_REF.match(text))


def load_attr(ref: str):
    """Import ``file.py`` as a module (its folder first on sys.path) and return ``attr``."""
    match = _REF.match(ref)
    if not match:
        raise ConfigError(f"expected FILE.py:NAME, got {ref!r}")
    path = Path(match["file"]).resolve()
    if not path.is_file():
        raise InputError(f"{match['file']} does not exist (from {ref!r})")
    module = load_module(path)
    obj = module
    for part in match["attr"].split("."):
        if not hasattr(obj, part):
            raise InputError(f"{path.name} has no attribute {match['attr']!r}")
        obj = getattr(obj, part)
    return obj


def load_module(path: Path):
    """Import the user's ``file.py`` once per process (its folder first on sys.path while it runs)."""
    path = Path(path).resolve()
    module_name = f"_edgekit_user_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


class UserCode:
    """The user's function, called by edgekit: an exception it raises becomes a UserCodeError that
    names it (``what``) and chains the original, so it is never taken for edgekit's own failure."""

    def __init__(self, fn, what: str):
        self.fn, self.what = fn, what
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except EdgekitError:
            raise
        except Exception as exc:
            raise UserCodeError(f"{self.what} raised {type(exc).__name__}: {exc}") from exc

    def __repr__(self):
        return f"UserCode({self.fn!r})"

