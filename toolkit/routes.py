"""Every route edgekit can take from a source framework to an artifact, in one table.

A route is keyed by ``(framework, format, scheme)`` and names the function that makes that
artifact (``"module:attr"``, imported on use) and what it can do. ``scheme`` is

- ``fp32``: the converter, ``convert(model, out_path, config, example=None) -> ConversionResult``
  (``model`` is the PreparedModel, ``example`` a validated data set for converters that trace);
- a precision (``fp16``, ``dynamic``, ``int8``, ``int16x8``) or a recipe of the int8 search
  (``selective``, ``static-transformer``): a quantizer, ``quantize(conversion, out_path,
  calibration, options, evaluation=None) -> QuantizationResult`` starting from the fp32
  conversion;
- ``qat``: the int8 artifact converted from a quantization-aware-trained model,
  ``export(qat_model, out_path, config, example) -> ConversionResult`` (no second calibration).

The pipeline's plan, its recipe search, the README's support matrix (``support_matrix()``, which a
test compares with the README) and the template tests that run every route on a tiny model all read
this table: adding a route is one line here and one module. Third parties add routes through the
entry-point group ``edgekit.routes`` (name ``framework/format/scheme``, value ``module:attr``).

The framework-side stages before export are keyed by framework: ``PRUNERS`` (``prune(model,
PruneOptions)``) and ``QAT_TRAINERS`` (``qat(model, QATOptions, calibration, QuantizeOptions,
pruned=) -> QATResult``; keyed ``(framework, format)`` for a format whose QAT artifact needs a QAT
model of its own, trained only when that format is a target).
"""

from dataclasses import dataclass

from .choices import Format, Framework, Scheme
from .registry import Entry, Registry


FP32, QAT = "fp32", "qat"
# Schemes reached only through the int8 recipe search (edgekit.quantize.recipes), never asked for.
RECIPE_SCHEMES = ("selective", "static-transformer")
# What the manifest records for an artifact of each scheme (the same name in every format).
MANIFEST_SCHEMES = {FP32: Scheme.FP32, "fp16": Scheme.FP16, "dynamic": Scheme.W8A32_DYNAMIC,
                    "int8": Scheme.W8A8_STATIC, "int16x8": Scheme.W8A16_STATIC, "selective": Scheme.W8A8_STATIC,
                    "static-transformer": Scheme.W8A8_STATIC, QAT: Scheme.W8A8_QAT}
CALIBRATED_SCHEMES = ("int8", "int16x8", "selective", "static-transformer")


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a route's artifact is and can do (the README matrix shows it; template tests check it)."""

    manifest_scheme: Scheme           # what the manifest records
    calibrated: bool = False          # needs calibration data
    accuracy_control: bool = False    # can revert layers to float until an accuracy drop holds (max_drop)
    int8_io: str = ""                 # "always" | "option" (``--int8-io``) | "" (float I/O)
    only: str = ""                    # the kind of model of the framework the route takes, where not every kind
    model_type: str = ""              # the graphs the route is for ("transformer"), where not every graph

    @classmethod
    def of(cls, scheme: str, **more) -> "Capabilities":
        return cls(manifest_scheme=MANIFEST_SCHEMES.get(scheme, scheme), calibrated=scheme in CALIBRATED_SCHEMES,
                   **more)


@dataclass(frozen=True)
class Route(Entry):
    capabilities: Capabilities = None

    @property
    def framework(self) -> str:
        return self.key[0]

    @property
    def format(self) -> str:
        return self.key[1]

    @property
    def scheme(self) -> str:
        return self.key[2]


class RouteRegistry(Registry):
    def register(self, key, target: str, *, requires=(), extra: str = "all", **capabilities) -> None:
        framework, fmt, scheme = key
        key = (Framework(framework), Format(fmt), scheme)
        self._entries[key] = Route(key, target, tuple(requires), extra, Capabilities.of(scheme, **capabilities))

    def _plugin_entry(self, name: str, target: str) -> Route:
        framework, fmt, scheme = name.split("/")  # (a plugin's capabilities: those its scheme implies)
        key = (Framework(framework), Format(fmt), scheme)
        return Route(key, target, capabilities=Capabilities.of(scheme))

    def find(self, framework, fmt, scheme) -> Route | None:
        return self.entries().get((framework, fmt, str(scheme)))

    def formats(self, framework) -> list:
        """The formats a framework's models convert to."""
        return sorted({key[1] for key in self.entries() if key[0] == framework and key[2] == FP32})


ROUTES = RouteRegistry("routes")

# ONNX: PyTorch via torch.onnx (dynamo), Keras/TF via tf2onnx, an ONNX source as is; the quantizers
# work on the ONNX file whatever it came from.
ROUTES.register(("torch", "onnx", FP32), "edgekit.converters.torch_onnx:convert",
                requires=("torch", "onnx", "onnxscript"), extra="torch")
ROUTES.register(("tf", "onnx", FP32), "edgekit.converters.tf_onnx:convert",
                requires=("tensorflow", "tf2onnx", "onnx"), extra="tf")
ROUTES.register(("onnx", "onnx", FP32), "edgekit.converters.onnx_onnx:convert", requires=("onnx",), extra="onnx")
for _framework in Framework:
    _onnx = dict(requires=("onnx", "onnxruntime"), extra="onnx")
    ROUTES.register((_framework, "onnx", "fp16"), "edgekit.quantize.onnx_fp16:quantize", **_onnx)
    ROUTES.register((_framework, "onnx", "dynamic"), "edgekit.quantize.onnx_int8:quantize_dynamic_int8", **_onnx)
    ROUTES.register((_framework, "onnx", "int8"), "edgekit.quantize.onnx_int8:quantize", **_onnx)
    # The transformer ladder's static rung: NNCF's transformer scheme (edgekit.quantize.onnx_nncf).
    ROUTES.register((_framework, "onnx", "static-transformer"), "edgekit.quantize.onnx_nncf:quantize_transformer",
                    requires=("onnx", "onnxruntime", "nncf"), extra="nncf", model_type="transformer")

# TFLite: Keras/TF through the TFLite converter (every scheme); PyTorch through litert-torch (PT2E:
# static int8 comes out with int8 I/O; no fp16 or 16x8 mode).
ROUTES.register(("tf", "tflite", FP32), "edgekit.converters.tf_tflite:convert", requires=("tensorflow",), extra="tf")
for _scheme in ("fp16", "dynamic", "int8", "int16x8", "selective"):
    ROUTES.register(("tf", "tflite", _scheme), f"edgekit.quantize.tflite_tf:quantize_{_scheme}",
                    requires=("tensorflow",), extra="tf", **({"int8_io": "option"} if _scheme == "int8" else {}))
ROUTES.register(("torch", "tflite", FP32), "edgekit.converters.torch_tflite:convert",
                requires=("torch", "litert_torch"), extra="litert")
ROUTES.register(("torch", "tflite", "dynamic"), "edgekit.quantize.tflite_torch:quantize_dynamic",
                requires=("torch", "litert_torch"), extra="litert")
ROUTES.register(("torch", "tflite", "int8"), "edgekit.quantize.tflite_torch:quantize_int8",
                requires=("torch", "litert_torch"), extra="litert", int8_io="always")

# OpenVINO IR: openvino.convert_model from every framework; NNCF int8 (with accuracy control).
for _framework in Framework:
    ROUTES.register((_framework, "openvino", FP32), f"edgekit.converters.openvino_ir:convert_{_framework}",
                    requires=("openvino",), extra="openvino")
    ROUTES.register((_framework, "openvino", "fp16"), "edgekit.quantize.openvino_nncf:quantize_fp16",
                    requires=("openvino",), extra="openvino")
    ROUTES.register((_framework, "openvino", "int8"), "edgekit.quantize.openvino_nncf:quantize_int8",
                    requires=("openvino", "nncf"), extra="nncf", accuracy_control=True)

# Int8 from a quantization-aware-trained model (PyTorch: NNCF, and for TFLite PT2E, whose graphs
# litert-torch converts and NNCF's fake quantizers it does not: edgekit.quantize.qat_pt2e; tf_keras:
# TF-MOT; Keras 3 Functional and Sequential models: edgekit's fake quantizers,
# edgekit.quantize.qat_keras3 — no SavedModel folder, no subclassed Keras 3 model).
ROUTES.register(("torch", "onnx", QAT), "edgekit.quantize.qat:export_onnx",
                requires=("torch", "onnx", "nncf"), extra="nncf")
ROUTES.register(("torch", "openvino", QAT), "edgekit.quantize.qat:export_openvino",
                requires=("torch", "openvino", "nncf"), extra="nncf")
ROUTES.register(("torch", "tflite", QAT), "edgekit.quantize.qat_pt2e:export_tflite",
                requires=("torch", "litert_torch", "torchao"), extra="litert", int8_io="always")
ROUTES.register(("tf", "tflite", QAT), "edgekit.quantize.qat:export_tflite_tf",
                requires=("tensorflow",), extra="tf", only="Keras 3, tf_keras")
ROUTES.register(("tf", "onnx", QAT), "edgekit.quantize.qat:export_onnx",
                requires=("tensorflow", "tf2onnx"), extra="tf", only="Keras 3, tf_keras")
ROUTES.register(("tf", "openvino", QAT), "edgekit.quantize.qat:export_openvino",
                requires=("tensorflow", "openvino"), extra="tf", only="Keras 3, tf_keras")

PRUNERS = Registry("pruners")
PRUNERS.register("torch", "edgekit.quantize.prune_torch:prune", requires=("torch",), extra="torch")
PRUNERS.register("tf", "edgekit.quantize.prune_keras:prune", requires=("tensorflow",), extra="tf")
QAT_TRAINERS = Registry("qat")
QAT_TRAINERS.register("torch", "edgekit.quantize.qat:qat_torch", requires=("torch", "nncf"), extra="nncf")
QAT_TRAINERS.register(("torch", "tflite"), "edgekit.quantize.qat_pt2e:qat_pt2e",
                      requires=("torch", "litert_torch", "torchao"), extra="litert")
QAT_TRAINERS.register("tf", "edgekit.quantize.qat:qat_keras", requires=("tensorflow",), extra="tf")


# The support matrix: its columns, in order (scheme, heading). Recipe schemes are listed under it.
_COLUMNS = (("fp32", "fp32"), ("fp16", "fp16"), ("dynamic", "dyn"), ("int8", "int8"), ("int16x8", "16x8"),
            ("qat", "QAT int8"))
_FORMAT_NAMES = {"onnx": "ONNX", "tflite": "TFLite", "openvino": "IR"}
_FRAMEWORK_NAMES = {"torch": "PyTorch", "tf": "Keras / TensorFlow", "onnx": "ONNX file"}


def _cell(route: Route | None) -> str:
    if route is None:
        return "—"
    caps = route.capabilities
    marks = [m for m, on in (("acc.-ctl.", caps.accuracy_control), (caps.only, bool(caps.only)),
                             ("int8 I/O" if caps.int8_io == "always" else "`--int8-io`", bool(caps.int8_io))) if on]
    return "✅" + (f" ({', '.join(marks)})" if marks else "")


def support_matrix() -> str:
    """The README's support matrix, generated from ROUTES: rows are source frameworks, columns
    formats × schemes (a column only where some framework has the route)."""
    entries = ROUTES.entries()
    columns = [(fmt, scheme, heading) for fmt in Format for scheme, heading in _COLUMNS
               if any(key[1:] == (fmt, scheme) for key in entries)]
    headings = []
    for fmt, scheme, heading in columns:
        first = not headings or headings[-1][0] != fmt
        headings.append((fmt, f"{_FORMAT_NAMES[fmt]} {heading}" if first else heading))
    lines = ["| source ↓ \\ target → | " + " | ".join(h for _, h in headings) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for framework in Framework:
        cells = [_cell(entries.get((framework, fmt, scheme))) for fmt, scheme, _ in columns]
        lines.append(f"| {_FRAMEWORK_NAMES[framework]} | " + " | ".join(cells) + " |")
    recipes = []
    for fmt in Format:
        for scheme in RECIPE_SCHEMES:
            sources = [_FRAMEWORK_NAMES[f] for f in Framework if (f, fmt, scheme) in entries]
            if sources:
                recipes.append(f"{_FORMAT_NAMES[fmt]} `{scheme}` from {', '.join(sources)}")
    return "\n".join(lines) + "\n\nRungs of the int8 recipe search (not asked for by name): " + "; ".join(recipes) + "."
