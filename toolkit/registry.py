"""A tiny lazy registry: names map to ``"module:attr"`` strings imported on use.

Converters, quantizers and sources register here; nothing heavy is imported
until an entry is used, and a missing optional dependency is reported with the
extra to install instead of crashing at import time. Third parties can add
entries through the entry-point group ``edgekit.<registry name>`` (a name
``torch/onnx`` is the key ``("torch", "onnx")``).
"""

import importlib
import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from .errors import MissingDependencyError, UnsupportedError


def label(key) -> str:
    """A key as people write it: ``torch/onnx/int8``."""
    return "/".join(str(part) for part in key) if isinstance(key, tuple) else str(key)


@dataclass(frozen=True)
class Entry:
    key: object
    target: str
    requires: tuple = ()
    extra: str = ""

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def is_available(self) -> bool:
        return not self.missing()

    def load(self):
        missing = self.missing()
        if missing:
            raise MissingDependencyError(
                f"{label(self.key)} needs {', '.join(missing)}: pip install 'edgekit[{self.extra}]'")
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


@dataclass
class Registry:
    name: str
    _entries: dict = field(default_factory=dict)
    _plugins_loaded: bool = False

    def register(self, key, target: str, *, requires=(), extra: str = "all") -> None:
        self._entries[key] = Entry(key, target, tuple(requires), extra)

    def _plugin_entry(self, name: str, target: str) -> Entry:
        key = tuple(name.split("/")) if "/" in name else name
        return Entry(key, target)

    def _load_plugins(self):
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for ep in entry_points(group=f"edgekit.{self.name}"):
                entry = self._plugin_entry(ep.name, ep.value)
                self._entries.setdefault(entry.key, entry)

    def entries(self) -> dict:
        self._load_plugins()
        return dict(self._entries)

    def get(self, key):
        self._load_plugins()
        if key not in self._entries:
            known = ", ".join(label(k) for k in self._entries)
            raise UnsupportedError(f"no {self.name} entry for {label(key)}; supported: {known}")
        return self._entries[key].load()

    def __contains__(self, key):
        return key in self.entries()
