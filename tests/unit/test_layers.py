"""Imports point down only; the runtime stands alone (static check of every module's imports)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_ALLOWED = {"numpy", "onnxruntime", "hashlib", "json", "pathlib", "dataclasses", "importlib",
                   "importlib.util", "os", "inspect", "threading", "openvino",
                   "xml.etree.ElementTree", "subprocess", "sys", "tempfile", "stat", "functools", "platform",
                   "warnings", "enum", "types", "traceback", "statistics", "time", "argparse",
                   "resource"}


FOLDERS = {"toolkit": "edgekit", "export": "edgekit.converters", "quantize": "edgekit.quantize",
           "runtime": "edgekit.runtime"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:-1]] + ([] if rel.name == "__init__.py" else [rel.stem])
    return ".".join(parts)


def _imports(path: Path):
    """Every module ``path`` imports (at any depth of its code), relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)


SOURCES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))
MODULES = {_module_name(p): p for p in SOURCES}


@pytest.mark.parametrize("path", sorted((ROOT / "runtime").rglob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_only_numpy_stdlib_and_backends(path):
    for module in _imports(path):
        if module.startswith("edgekit."):
            assert module.startswith("edgekit.runtime"), f"{path.name} imports {module}"
        else:
            assert module in RUNTIME_ALLOWED, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", sorted((ROOT / "export").rglob("*.py")) + sorted((ROOT / "quantize").rglob("*.py")),
                         ids=lambda p: p.name)
def test_converters_and_quantizers_do_not_import_the_pipeline_cli_or_sources(path):
    for module in _imports(path):
        assert not module.startswith(("edgekit.pipeline", "edgekit.cli", "edgekit.verification", "edgekit.sources")), \
            f"{path.name} imports {module}"


def test_edgekit_modules_import_no_cycle():
    # A module importing its own package (``from . import QuantizationResult``) is not an edge: the
    # package's __init__ is loaded first by Python anyway.
    graph = {name: {m for m in _imports(path) if m in MODULES and m != name and not name.startswith(m + ".")}
             for name, path in MODULES.items()}
    cycles = []

    def visit(node, stack, seen):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)
    for start in sorted(graph):
        visit(start, [start], {start})
    assert not cycles, cycles[:5]


def test_verify_runs_without_torch_or_onnx(digits_bundle, digits_files):
    """A slim CI runner or a device: the gate needs only numpy + onnxruntime + the stored reference."""
    code = ("import sys\n"
            "for name in ('torch', 'onnx', 'onnxscript', 'tensorflow'): sys.modules[name] = None\n"
            "from edgekit.cli.main import main\n"
            f"sys.exit(main(['verify', {str(digits_bundle[0])!r}, '--eval', {str(digits_files['eval'])!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout
