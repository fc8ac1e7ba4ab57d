"""Load ``file.py:name`` references: the user's own code, named explicitly on the command line."""

import importlib.util
import re
import sys
from pathlib import Path

from .errors import ConfigError, InputError

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
    module_name = f"_edgekit_user_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
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
    obj = module
    for part in match["attr"].split("."):
        if not hasattr(obj, part):
            raise InputError(f"{path.name} has no attribute {match['attr']!r}")
        obj = getattr(obj, part)
    return obj
