"""TensorFlow / Keras source: Keras 3 (``.keras``, live models), legacy tf_keras (``.h5``, live),
SavedModel folders, and ``file.py:factory`` returning any of those models.

Every converter works from one SavedModel that this source writes once: for Keras 3
through Keras' own ``ExportArchive`` (it tracks and freezes the weights, so subclassed
models with trained weights convert correctly; tf.function concrete-function routes can
silently drop them), for tf_keras through ``tf.saved_model.save`` with a serving
signature. Its outputs are named ``output_0``, ``output_1``... (or by dict key), the same
in every format. The reference runs the original model object in TensorFlow.
"""

import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from edgekit.runtime import Layout, TensorInfo

from .._pyfile import is_pyfile_ref, load_attr, load_module
from ..config import ReferenceDevice
from ..errors import ConfigError, ConversionError, EdgekitError, InputError, UserCodeError
from ..memory import MemoryPlan
from ..reference import ReferenceOutputs
from ._base import SourceBase

log = logging.getLogger("edgekit.sources.tf")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _kind(model) -> str | None:
    for cls in type(model).__mro__:
        module = cls.__module__
        if module.startswith("keras.") and cls.__name__ == "Model":
            return "keras3"
        if module.startswith("tf_keras.") and cls.__name__ == "Model":
            return "tf_keras"
    return None


def flatten_outputs(result) -> dict:
    """Keras/TF outputs as ordered name -> tensor, named as the exported signature names them."""
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return {f"output_{i}": v for i, v in enumerate(result)}
    return {"output_0": result}


def resolve_tf_device(requested, gpus) -> str:
    requested = ReferenceDevice(requested)
    if requested == ReferenceDevice.CUDA and not gpus:
        raise ConfigError("--reference-device cuda: TensorFlow sees no GPU here; use auto or cpu")
    if requested == ReferenceDevice.AUTO:
        return "cuda" if gpus else "cpu"
    return requested.value


class TFSource(SourceBase):
    framework = "tf"

    @staticmethod
    def accepts(model) -> bool:
        if isinstance(model, (str, Path)):
            path = Path(model)
            return path.suffix.lower() in (".keras", ".h5", ".hdf5") or (path / "saved_model.pb").is_file()
        root = type(model).__module__.split(".")[0]
        return root in ("keras", "tf_keras", "tensorflow") or _kind(model) is not None

    @classmethod
    def load(cls, model, *, weights=None, input_specs=None, trust_model=False, custom_objects=None):
        description = str(model) if isinstance(model, (str, Path)) else type(model).__name__
        objects = resolve_custom_objects(custom_objects)
        if isinstance(model, (str, Path)):
            model = _load_file(Path(model), objects, given=bool(custom_objects))
        kind = _kind(model) or ("saved_model" if hasattr(model, "signatures") else None)
        if kind is None:
            raise InputError(f"{description} is a {type(model).__name__}, not a Keras model or SavedModel")
        if weights is not None:
            if kind == "saved_model":
                raise ConfigError("--weights does not apply to a SavedModel (its weights are inside it)")
            try:
                model.load_weights(str(weights))
            except Exception as exc:
                raise InputError(f"weights {weights} do not fit the model: {type(exc).__name__}: {exc}") from exc
        return cls(model, kind, description, input_specs)

    def __init__(self, native, kind, description, input_specs):
        self.native = native
        self.kind = kind
        self.description = description
        self.input_specs = list(input_specs) if input_specs else self._declared_specs()
        self.output_names = None
        self._saved_model = None
        self._tmp = None

    def with_model(self, model, suffix) -> "TFSource":
        """The same source (inputs, outputs) holding another Keras model: a compressed copy."""
        other = TFSource(model, _kind(model) or self.kind, self.description + suffix, self.input_specs)
        other.output_names = self.output_names
        other.owned = True  # edgekit's own compressed copy
        return other.freeze()

    def keras_model(self):
        return None if self.kind == "saved_model" else self.native

    def weight_bytes(self) -> int | None:
        import numpy as np
        weights = getattr(self.keras_model(), "weights", None)
        return None if weights is None else int(sum(np.asarray(w).nbytes for w in weights))

    # -- input specs ----------------------------------------------------------------------------------
    def _declared_specs(self):
        if self.kind == "saved_model":
            signature = self._signature()
            _, kwargs = signature.structured_input_signature
            return [_spec(name, spec.shape, spec.dtype) for name, spec in kwargs.items()]
        try:
            inputs = self.native.inputs
        except (AttributeError, ValueError):
            return None
        if not inputs:
            return None
        return [_spec(_input_name(t, i), t.shape, t.dtype) for i, t in enumerate(inputs)]

    def specs_from_data(self, dataset):
        arrays = list(dataset.inputs.items())
        names = [k if k != "x" else "input" for k, _ in arrays] if len(arrays) > 1 else ["input"]
        return [_spec(name, (None,) + tuple(a.shape[1:]), a.dtype if a.dtype.kind != "f" else np.float32)
                for name, (_, a) in zip(names, arrays)]

    def _signature(self):
        signatures = getattr(self.native, "signatures", {})
        if "serving_default" not in signatures:
            raise InputError(f"{self.description} has no 'serving_default' signature; "
                             f"it has {sorted(signatures)}")
        return signatures["serving_default"]

    # -- running --------------------------------------------------------------------------------------
    def _call(self, arrays):
        """Run the original model on a batch: dict of name -> array in, ordered outputs out."""
        if self.kind == "saved_model":
            return flatten_outputs(self._signature()(**arrays))
        values = [arrays[s.name] for s in self.input_specs]
        return flatten_outputs(self.native(values[0] if len(values) == 1 else values, training=False))

    def probe(self, dataset, *, timeout=None):
        try:
            outputs = self._call({s.name: dataset.inputs[s.name][:2] for s in self.input_specs})
        except Exception as exc:
            shapes = {s.name: tuple(dataset.inputs[s.name].shape) for s in self.input_specs}
            raise InputError(f"the model rejected the data (inputs {shapes}): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self.output_names = list(outputs)
        return self.output_names

    def reference(self, dataset, device, *, timeout=None, memory=MemoryPlan()) -> ReferenceOutputs:
        """The model's outputs on ``dataset``, ``memory.batch`` samples per call (Keras runs a batch
        eagerly at ~75 MB per 224x224 sample: 32 at once peaked at 3.9 GB)."""
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        tf_device = resolve_tf_device(device, gpus)
        chunks = {}
        with tf.device("/GPU:0" if tf_device == "cuda" else "/CPU:0"):
            for start in range(0, len(dataset), memory.batch):
                batch = {k: v[start:start + memory.batch] for k, v in dataset.inputs.items()}
                for name, value in self._call(batch).items():
                    chunks.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
        versions = {"tensorflow": tf.__version__}
        if self.kind == "keras3":
            import keras
            versions["keras"] = keras.__version__
        elif self.kind == "tf_keras":
            import tf_keras
            versions["tf_keras"] = tf_keras.__version__
        device_name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
            if tf_device == "cuda" else "cpu"
        return ReferenceOutputs({k: np.concatenate(v) for k, v in chunks.items()}, "tensorflow", tf_device,
                                device_name, versions, dataset.sha256(), len(dataset))

    # -- the one SavedModel every converter starts from ------------------------------------------------
    def saved_model_dir(self) -> Path:
        if self._saved_model is not None:
            return self._saved_model
        if self.kind == "saved_model" and isinstance(self.description, str) and Path(self.description).is_dir():
            self._saved_model = Path(self.description)
            return self._saved_model
        import tensorflow as tf
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-savedmodel-")
        path = Path(self._tmp.name) / "saved_model"
        signature = [tf.TensorSpec([d for d in s.shape], tf.as_dtype(s.dtype), name=s.name) for s in self.input_specs]
        model = self.native
        names = [s.name for s in self.input_specs]

        def serve(*args):
            if self.kind == "saved_model":
                return flatten_outputs(self._signature()(**dict(zip(names, args))))
            return flatten_outputs(model(args[0] if len(args) == 1 else list(args), training=False))

        try:
            if self.kind == "keras3":
                import keras
                archive = keras.export.ExportArchive()
                archive.track(model)
                archive.add_endpoint("serve", serve, input_signature=signature)
                archive.write_out(str(path), verbose=False)
            else:
                function = tf.function(serve, input_signature=signature)
                tf.saved_model.save(model if self.kind == "tf_keras" else tf.Module(),
                                    str(path), signatures={"serving_default": function.get_concrete_function()})
        except Exception as exc:
            raise ConversionError(f"exporting the model as a SavedModel failed: {type(exc).__name__}: {exc}") from exc
        self._saved_model = path
        return path


def _spec(name, shape, dtype) -> TensorInfo:
    shape = tuple(None if d is None else int(d) for d in shape)
    dtype = np.dtype(dtype.as_numpy_dtype if hasattr(dtype, "as_numpy_dtype") else dtype)
    layout = Layout.NHWC if len(shape) == 4 and dtype.kind == "f" else None
    return TensorInfo(name=name, shape=shape, dtype=dtype, layout=layout)


def _input_name(tensor, index) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]


def _refuse_code_layers(path: Path):
    """Legacy HDF5 models ignore Keras' safe mode: a Lambda layer's marshalled bytecode would run on
    load. Read the stored config (plain JSON) first and refuse any."""
    import json

    import h5py
    try:
        with h5py.File(path, "r") as fh:
            config = fh.attrs.get("model_config")
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 file: {exc}") from exc
    if config is None:
        raise InputError(f"{path} holds no model config (weights only?): load them with --weights into "
                         "FILE.py:factory")
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    lambdas = [layer.get("config", {}).get("name", "?") for layer in _layers(json.loads(config))
               if layer.get("class_name") == "Lambda"]
    if lambdas:
        raise InputError(f"{path} holds Lambda layers {lambdas}, whose Python bytecode the legacy .h5 format runs "
                         "on load (it ignores safe mode); edgekit does not load it. Rebuild the model in code "
                         "(FILE.py:factory) and load its weights with --weights")


def _layers(config):
    """Every layer config, nested models included."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
        for value in config.values():
            yield from _layers(value)
    elif isinstance(config, list):
        for value in config:
            yield from _layers(value)


def resolve_custom_objects(items) -> dict:
    """``--custom-objects`` (API ``custom_objects=``): the Keras classes a saved model needs.

    Each item is the user's own ``FILE.py``, imported: classes decorated with
    ``register_keras_serializable`` register themselves; a dict named ``custom_objects`` in it is
    used, and else every Keras layer/model class the file defines, by class name. ``FILE.py:NAME``
    takes that one dict or class; the API also takes a dict. Loading stays in safe mode: this names
    the code that may run, it does not let a model file bring its own."""
    if not items:
        return {}
    if isinstance(items, (dict, str, Path)):
        items = [items]
    objects = {}
    for item in items:
        if isinstance(item, dict):
            objects.update(item)
            continue
        text = str(item)
        if is_pyfile_ref(text):
            value = _user_code(load_attr, text)
            objects.update(value if isinstance(value, dict) else {text.rpartition(":")[2]: value})
            continue
        path = Path(text)
        if path.suffix != ".py" or not path.is_file():
            raise InputError(f"--custom-objects: expected a Python file (FILE.py or FILE.py:NAME) defining the "
                             f"model's custom classes, got {text!r}"
                             + ("" if path.suffix != ".py" else " (no such file)"))
        module = _user_code(load_module, path)
        declared = getattr(module, "custom_objects", None)
        if declared is not None and not isinstance(declared, dict):
            raise InputError(f"{path.name}: custom_objects is a {type(declared).__name__}; expected a dict of "
                             "name -> class or function")
        objects.update(declared if declared is not None else _keras_classes(module))
    return objects


def _user_code(load, what):
    try:
        return load(what)
    except EdgekitError:
        raise
    except Exception as exc:
        raise UserCodeError(f"importing {what} (--custom-objects) raised {type(exc).__name__}: {exc}") from exc


def _keras_classes(module) -> dict:
    """The Keras (3 or tf_keras) layer and model classes ``module`` itself defines."""
    found = {}
    for name, value in vars(module).items():
        if isinstance(value, type) and value.__module__ == module.__name__ and any(
                base.__module__.split(".")[0] in ("keras", "tf_keras") and base.__name__ in ("Layer", "Model")
                for base in value.__mro__):
            found[name] = value
    return found


# How Keras 3 and tf_keras say a saved model names a class they do not know.
_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '?([\w>.]+)'?")


def _load_file(path: Path, custom_objects: dict, given: bool):
    if not path.exists():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".keras":
            import keras
            # safe_mode=True: a Lambda layer's pickled bytecode is refused, never executed.
            return keras.saving.load_model(str(path), custom_objects=custom_objects, safe_mode=True, compile=False)
        if suffix in (".h5", ".hdf5"):
            _refuse_code_layers(path)
            import tf_keras
            return tf_keras.models.load_model(str(path), custom_objects=custom_objects, compile=False)
        if custom_objects:
            raise ConfigError("--custom-objects applies to .keras and .h5 models; a SavedModel needs no Python classes")
        import tensorflow as tf
        return tf.saved_model.load(str(path))
    except EdgekitError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        unknown = _UNKNOWN_CLASS.search(str(exc))
        if unknown:
            name = unknown.group(1) or unknown.group(2)
            hint = ("none of the --custom-objects files defines it" if given else
                    "pass the Python file that defines it with --custom-objects FILE.py (API: custom_objects=)")
            raise InputError(f"cannot load {path}: it uses the class {name!r}, which is not part of Keras; "
                             f"{hint}") from exc
        raise InputError(f"cannot load {path}: {type(exc).__name__}: {first}") from exc
