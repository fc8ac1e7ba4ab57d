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
                   "warnings"}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, 0) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "", node.level)


@pytest.mark.parametrize("path", sorted((ROOT / "runtime").rglob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_only_numpy_stdlib_and_backends(path):
    for module, level in _imports(path):
        if level:  # relative import inside edgekit.runtime
            continue
        assert module in RUNTIME_ALLOWED, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", sorted((ROOT / "export").rglob("*.py")) + sorted((ROOT / "quantize").rglob("*.py")),
                         ids=lambda p: p.name)
def test_converters_and_quantizers_do_not_import_the_pipeline_or_cli(path):
    for module, _ in _imports(path):
        if path == ROOT / "export" / "__init__.py" and module == "edgekit.pipeline":
            continue  # the callable-package forwarder of edgekit.export(...), imported on call
        assert not module.startswith(("edgekit.pipeline", "edgekit.cli", "edgekit.verification")), \
            f"{path.name} imports {module}"


def test_verify_runs_without_torch_or_onnx(digits_bundle, digits_files):
    """A slim CI runner or a device: the gate needs only numpy + onnxruntime + the stored reference."""
    code = ("import sys\n"
            "for name in ('torch', 'onnx', 'onnxscript', 'tensorflow'): sys.modules[name] = None\n"
            "from edgekit.cli.main import main\n"
            f"sys.exit(main(['verify', {str(digits_bundle[0])!r}, '--eval', {str(digits_files['eval'])!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout
