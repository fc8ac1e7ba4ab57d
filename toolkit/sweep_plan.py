"""A sweep plan, read and checked: models × targets × precisions × recipes × CPU profiles → cells.

A plan speaks the ``edgekit export`` command's language: a model entry holds the same MODEL/DATA
specs and options as that command (``model``, ``weights``, ``calib``, ``eval``, ``input``,
``trust-model``, ...), a recipe is a named set of export options (``weight-type = "u8"``), and each
cell is one export command line. So the options are checked by the export command's own parser
(``edgekit.cli.export_cmd.register``), not by a second reading of them here, and every error names
the plan's field, what came and what was expected.

    out = "sweep-out"                         # relative to the plan file
    targets = ["onnx", "openvino"]
    precisions = ["int8"]
    profiles = ["host"]                       # --target-cpu of each cell
    [recipes]
    search = {}                               # the format's recipe ladder (the default)
    u8u8 = { weight-type = "u8", reduce-range = false }
    [[models]]
    name = "cnn"
    model = "../digits.py:build_model"
    weights = "../work/digits_weights.pt"
    calib = "../work/calib.npz"
    eval = "../work/eval.npz"

Paths are relative to the plan's folder. A cell's input hash covers its command line, the content
of every file and folder it names (model, weights, data, training hook, metric) and the versions of
edgekit and the libraries it drives: a re-run skips the cells whose hash is unchanged.
"""

import argparse
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

from .choices import Format, Precision
from .errors import ConfigError, InputError, MissingDependencyError, did_you_mean
from .memory import parse_size

PLAN_KEYS = ("out", "models", "targets", "precisions", "recipes", "profiles", "options", "resources")
MODEL_KEYS = ("name", "model", "resources")
RESOURCE_KEYS = ("cpus", "memory")
# Export options the plan's axes and the sweep set for every cell; never a model's or a recipe's.
RESERVED = {"to": "targets", "int8": "precisions", "fp16": "precisions", "dynamic-int8": "precisions",
            "int16x8": "precisions", "target-cpu": "profiles", "out": "the sweep (each cell's bundle folder)",
            "json": "the sweep", "quiet": "the sweep", "verbose": "the sweep", "help": "the sweep",
            # a cell's export runs inside a Ray task already: its own Ray would nest clusters
            "workers": "the sweep (resources.cpus per cell)", "ray-address": "the sweep (--address)"}
PRECISION_FLAGS = {"fp32": (), "fp16": ("--fp16",), "dynamic": ("--dynamic-int8",), "int8": ("--int8",),
                   "int16x8": ("--int16x8",)}
# Specs naming a file or folder (FILE.py:NAME for code): resolved against the plan's folder and
# content-hashed. Required ones must exist; a training hook or metric may be a name ("cosine").
# --custom-objects may be given a list of files.
PATH_OPTIONS = ("model", "weights", "calib", "eval", "train", "metric", "custom-objects")
REQUIRED_PATHS = ("model", "weights", "calib", "eval", "custom-objects")
REPEATED_PATHS = ("custom-objects",)
DEFAULT_RECIPE = "default"


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One export-and-verify run: the ``edgekit export`` arguments (all but ``--out``), the axes it
    sits on, the Ray resources it declares and the hash of its inputs."""

    name: str                  # its folder under OUT/cells: model.target.precision[.recipe].profile
    model: str
    target: str
    precision: str
    recipe: str                # "" for fp32 cells: a recipe only changes quantized artifacts
    profile: str
    argv: tuple
    files: tuple = ()          # the files and folders its inputs come from
    cpus: float = 1.0
    memory: int | None = None  # bytes Ray reserves for it; None: no reservation
    input_hash: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "argv": list(self.argv), "files": list(self.files)}

    @classmethod
    def from_dict(cls, data, where) -> "Cell":
        return from_record(cls, data, where)


def from_record(cls, data, where):
    """A frozen record class from the JSON the sweep wrote (lists back to tuples); InputError
    naming the file when it does not fit (a hand-edited or foreign file)."""
    names = {f.name for f in fields(cls)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise InputError(f"{where}: expected a record with keys {sorted(names)}, got {data!r:.200}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Plan:
    cells: tuple
    out: Path | None           # the plan's ``out``, resolved; None when it names none


def load_plan(plan, base=None) -> Plan:
    """``plan``: a ``.toml``/``.yaml``/``.yml`` file, or a dict of the same shape (its paths
    relative to ``base``, default the working folder)."""
    if isinstance(plan, (str, os.PathLike)):
        path = Path(plan)
        return _plan(_read(path), path.resolve().parent)
    if isinstance(plan, Mapping):
        return _plan(dict(plan), Path(base or ".").resolve())
    raise ConfigError(f"plan: expected a TOML or YAML file or a dict, got {type(plan).__name__}")


def _read(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"plan {path}: expected a .toml, .yaml or .yml file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"plan {path}: cannot read it: {exc}") from exc
    if suffix == ".toml":
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"plan {path}: not valid TOML: {exc}") from exc
    else:
        data = _yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"plan {path}: expected a table of keys ({', '.join(PLAN_KEYS)}), got {type(data).__name__}")
    return data


def _yaml(path, text):
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependencyError(f"plan {path} is YAML, which needs PyYAML (pip install pyyaml, or "
                                     "pip install 'edgekit[ray]', which brings it); or write the plan as TOML") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"plan {path}: not valid YAML: {exc}") from exc


def _plan(data: dict, base: Path) -> Plan:
    _check_keys(data, PLAN_KEYS, "")
    actions = _export_options()
    shared = _options(_table(data, "options", {}), "options", actions)
    targets = [_choice(t, Format, f"targets[{i}]") for i, t in enumerate(_list(data, "targets", ["onnx"]))]
    precisions = [_choice(p, Precision, f"precisions[{i}]") for i, p in enumerate(_list(data, "precisions", ["int8"]))]
    recipes = {str(name): _options(_expect(options, dict, f"recipes.{name}", "a table of export options"),
                                   f"recipes.{name}", actions)
               for name, options in _table(data, "recipes", {DEFAULT_RECIPE: {}}).items()}
    if not recipes:
        raise ConfigError("plan recipes: expected at least one recipe (a name = a table of export options)")
    profiles = [_profile(p, f"profiles[{i}]") for i, p in enumerate(_list(data, "profiles", [_default_profile()]))]
    resources = _resources(_table(data, "resources", {}), "resources", {"cpus": 1.0, "memory": None})
    models = _list(data, "models", None)
    cells, names = [], {}
    for index, entry in enumerate(models):
        model = _model(entry, f"models[{index}]", shared, actions, resources, names)
        for target, precision, profile in itertools.product(targets, precisions, profiles):
            for recipe in (recipes if precision != "fp32" else [""]):
                cells.append(_cell(model, target, precision, recipe, recipes.get(recipe, {}), profile, actions, base))
    _check_unique(cells)
    out = data.get("out")
    if out is not None:
        out = base / _expect(out, str, "out", "a folder path")
    return Plan(tuple(cells), out)


@dataclass(frozen=True)
class _Model:
    name: str
    where: str
    options: dict      # its spec and options, the plan's shared options under its own
    origins: dict      # option -> the plan field it came from, for messages
    cpus: float
    memory: int | None


def _model(entry, where, shared, actions, resources, names) -> _Model:
    _expect(entry, dict, where, "a table with `model` and export options")
    own = _options({k: v for k, v in entry.items() if k not in MODEL_KEYS}, where, actions, also=MODEL_KEYS)
    if "model" not in entry:
        raise ConfigError(f"plan {where}: missing `model` (a model spec as `edgekit export` takes, "
                          "e.g. \"digits.py:build_model\" or \"model.onnx\")")
    spec = _expect(entry["model"], str, f"{where}.model", "a model spec (a path, or FILE.py:FACTORY)")
    name = _expect(entry.get("name") or Path(spec.partition(":")[0]).stem, str, f"{where}.name", "a name")
    if name in names:
        raise ConfigError(f"plan {where}: name {name!r} is taken by {names[name]}; give each model its own `name`")
    names[name] = where
    limits = _resources(_expect(entry.get("resources", {}), dict, f"{where}.resources", "a table"),
                        f"{where}.resources", resources)
    origins = {**{key: f"options.{key}" for key in shared}, **{key: f"{where}.{key}" for key in ("model", *own)}}
    return _Model(name, where, {"model": spec, **shared, **own}, origins, limits["cpus"], limits["memory"])


def _cell(model, target, precision, recipe, recipe_options, profile, actions, base) -> Cell:
    origins = {**model.origins, **{key: f"recipes.{recipe}.{key}" for key in recipe_options}}
    options, files = _resolve_paths({**model.options, **recipe_options}, origins, base)
    spec = options.pop("model")
    argv = [spec, f"--to={target}", *PRECISION_FLAGS[precision], f"--target-cpu={profile}"]
    for key in sorted(options):
        argv += _flag(key, options[key], actions[key], origins[key])
    parts = [model.name, target, precision, *([recipe] if recipe else []), profile]
    cell = Cell(name=".".join(_safe(p) for p in parts), model=model.name, target=target, precision=precision,
                recipe=recipe, profile=profile, argv=tuple(argv), files=files, cpus=model.cpus, memory=model.memory)
    _parse(cell, model.where)
    return cell


def _safe(part: str) -> str:
    """A readable, portable folder-name part: letters, digits, ``_+-``; profiles' commas become ``+``."""
    return re.sub(r"[^A-Za-z0-9_+-]", "_", part.replace(",", "+")) or "_"


def _check_unique(cells):
    seen = {}
    for cell in cells:
        if cell.name in seen:
            raise ConfigError(f"plan: two cells would share the folder {cell.name!r} ({seen[cell.name]} and "
                              f"{cell.model}/{cell.recipe or 'fp32'}/{cell.profile}): rename a model or recipe so "
                              "that names differ in letters and digits, not only in punctuation")
        seen[cell.name] = f"{cell.model}/{cell.recipe or 'fp32'}/{cell.profile}"


# --- the export command's options -------------------------------------------------------------

class _RaisingParser(argparse.ArgumentParser):
    """argparse reports a bad value by exiting; a plan's bad value is a ConfigError naming its field."""

    def error(self, message):
        raise ConfigError(message)


@lru_cache(maxsize=1)
def _export_parser():
    from edgekit.cli import export_cmd
    sub = _RaisingParser(prog="edgekit", add_help=False).add_subparsers()
    export_cmd.register(sub)  # (subparsers are made of the parent's class: errors raise)
    return sub.choices["export"]


def _export_options() -> dict:
    """Option name (without ``--``) -> argparse action, for every export option a plan may set."""
    actions = _export_parser()._actions  # noqa: SLF001 (argparse keeps its options there)
    return {flag[2:]: action for action in actions for flag in action.option_strings
            if flag.startswith("--") and flag[2:] not in RESERVED}


def _options(table: dict, where: str, actions: dict, also=()) -> dict:
    """A table of export options, keys normalized (``weight_type`` = ``weight-type``) and checked;
    ``also``: the other keys the table may hold (for the hint when a key is unknown)."""
    options = {}
    for key, value in table.items():
        name = str(key).replace("_", "-")
        if name in RESERVED:
            raise ConfigError(f"plan {where}.{key}: set by {RESERVED[name]}, not by a model's or recipe's options")
        if name not in actions:
            expected = f"{', '.join(also)} or " if also else ""
            raise ConfigError(f"plan {where}: unknown key {key!r}; expected {expected}an `edgekit export` option "
                              f"(edgekit export --help){did_you_mean(name, [*also, *sorted(actions)])}")
        options[name] = value
    return options


def _flag(key, value, action, where) -> list:
    """``key = value`` as export arguments: a switch from true/false, ``--key=value`` per value."""
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise ConfigError(f"plan {where}: expected true or false, got {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [f"--{key}" if value else f"--{key[3:] if key.startswith('no-') else 'no-' + key}"]
        return [f"--{key}"] if value else []
    repeatable = isinstance(action, argparse._AppendAction)  # noqa: SLF001 (--input, --tol, --keep-fp32 ...)
    if isinstance(value, list) and not repeatable:
        raise ConfigError(f"plan {where}: expected one value, got a list {value!r}")
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(f"plan {where}: expected a string or a number, got {item!r}")
    return [f"--{key}={item}" for item in values]


def _parse(cell, where):
    """The export command's own parser checks the cell's values (types, choices)."""
    try:
        _export_parser().parse_args([*cell.argv, "--out=_"])
    except ConfigError as exc:
        raise ConfigError(f"plan {where}, cell {cell.name}: {exc}") from exc


def _resolve_paths(options: dict, origins: dict, base: Path) -> tuple:
    """(``options`` with their paths made absolute against ``base``, the files and folders they name)."""
    resolved, files = dict(options), []
    for key in PATH_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        several = key in REPEATED_PATHS and isinstance(value, list)
        paths = [_resolve_path(v, key, origins[key], base, files) for v in (value if several else [value])]
        resolved[key] = paths if several else paths[0]
    return resolved, tuple(dict.fromkeys(files))


def _resolve_path(value, key, where, base: Path, files: list) -> str:
    value = _expect(value, str, where, "a path (or FILE.py:NAME)")
    path, sep, attr = value, "", ""
    if not (base / value).exists() and ".py:" in value:
        path, sep, attr = value.rpartition(":")
    if (base / path).exists():
        files.append(str((base / path).resolve()))
        return files[-1] + sep + attr
    if key in REQUIRED_PATHS:
        raise ConfigError(f"plan {where}: {path!r} not found (paths are relative to the plan's folder, {base})")
    return value


# --- small checks -------------------------------------------------------------------------------

def _check_keys(table: dict, allowed, where: str):
    for key in table:
        if key not in allowed:
            raise ConfigError(f"plan{' ' + where if where else ''}: unknown key {key!r}; expected {', '.join(allowed)}"
                              f"{did_you_mean(key, allowed)}")


def _expect(value, kind, where, expected):
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"plan {where}: expected {expected}, got {value!r}")
    return value


def _list(data, key, default) -> list:
    if key not in data:
        if default is None:
            raise ConfigError(f"plan: missing `{key}` (a list)")
        return default
    value = data[key]
    if isinstance(value, str):
        value = [value]
    _expect(value, list, key, "a list")
    if not value:
        raise ConfigError(f"plan {key}: expected at least one entry, got an empty list")
    return value


def _table(data, key, default) -> dict:
    return _expect(data.get(key, default), dict, key, "a table")


def _choice(value, enum, where) -> str:
    choices = [member.value for member in enum]
    if value not in choices:
        raise ConfigError(f"plan {where}: got {value!r}, expected one of {choices}{did_you_mean(value, choices)}")
    return str(value)


def _profile(value, where) -> str:
    from .profiles import resolve
    _expect(value, str, where, "CPU profiles as --target-cpu takes them (host, x86-avx2, x86-vnni, arm64, all)")
    try:
        resolve(value)
    except ConfigError as exc:
        raise ConfigError(f"plan {where}: {exc}") from exc
    return value


def _default_profile() -> str:
    """The export's default profiles, written into each cell: a worker's environment cannot change them."""
    from .profiles import default_targets
    return ",".join(default_targets())


def _resources(table, where, defaults) -> dict:
    _check_keys(table, RESOURCE_KEYS, where)
    cpus = table.get("cpus", defaults["cpus"])
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
        raise ConfigError(f"plan {where}.cpus: expected a number of CPUs > 0, got {cpus!r}")
    memory = table.get("memory", defaults["memory"])
    return {"cpus": float(cpus), "memory": None if memory is None else parse_size(memory, f"plan {where}.memory")}


# --- input hashes -------------------------------------------------------------------------------

def with_hashes(cells) -> list:
    """The cells with ``input_hash`` set; each file or folder is read once however many cells name it."""
    from ._version import versions as library_versions
    versions = library_versions()  # edgekit's and the libraries' it drives, as the manifest records them
    digest = lru_cache(maxsize=None)(_digest)
    hashed = []
    for cell in cells:
        text = json.dumps({"argv": cell.argv, "files": {f: digest(f) for f in cell.files}, "versions": versions},
                          sort_keys=True)
        hashed.append(replace(cell, input_hash=hashlib.sha256(text.encode()).hexdigest()))
    return hashed


def _digest(path: str) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents)."""
    from edgekit.runtime import sha256_file
    root = Path(path)
    if not root.is_dir():
        return sha256_file(root)
    total = hashlib.sha256()
    for item in sorted(p for p in root.rglob("*") if p.is_file()):
        total.update(f"{item.relative_to(root)}\0{sha256_file(item)}\n".encode())
    return total.hexdigest()
