"""``edgekit export MODEL --to onnx --int8 --calib DATA --eval DATA --out DIR``."""

import argparse

from ._common import Progress, add_common, add_isolation, add_profiles, add_tolerance, print_report


def register(sub):
    p = sub.add_parser("export", help="convert, quantize and parity-verify a model into a bundle",
                       description="Export MODEL to each --to format (fp32, plus --int8/--fp16), verify every "
                                   "artifact against the source model, and write the bundle to --out atomically.")
    p.add_argument("model", metavar="MODEL",
                   help="FILE.py:FACTORY returning a torch.nn.Module or a Keras model, a torch.export .pt2 program, "
                        "a .keras / .h5 file, a SavedModel folder, or an .onnx file")
    p.add_argument("--to", default="onnx", metavar="FORMATS", help="comma-separated target formats: onnx, tflite, "
                   "openvino (default: onnx)")
    p.add_argument("--int8", action="store_true", help="also produce full static int8, w8a8 (needs --calib)")
    p.add_argument("--fp16", action="store_true", help="also produce fp16")
    p.add_argument("--dynamic-int8", action="store_true",
                   help="also produce dynamic-range int8 (int8 weights, float activations; no calibration)")
    p.add_argument("--int16x8", action="store_true",
                   help="also produce int8 weights with int16 activations (TFLite; needs --calib)")
    p.add_argument("--int8-io", action="store_true",
                   help="int8 artifacts take and return int8 tensors where the format allows it (TFLite); "
                        "edgekit.runtime converts float data using the scale/zero point in the manifest")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder (replaced atomically)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow model files that can run code when loaded (.pt2 programs, TorchScript archives); "
                        "only for files you produced")
    p.add_argument("--custom-objects", action="append", default=[], metavar="FILE.py[:NAME]",
                   help="the Python file defining a saved Keras model's own layers/classes (repeatable): it is "
                        "imported, its register_keras_serializable classes register themselves, and its "
                        "`custom_objects` dict (else every Keras class it defines) is passed to load_model; "
                        "safe mode stays on")
    p.add_argument("--weights", metavar="STATE.pt", help="state_dict for FILE.py:FACTORY, loaded with weights_only=True")
    p.add_argument("--calib", metavar="DATA", help=".npz/.npy, image folder, or FILE.py:CALLABLE yielding batches")
    p.add_argument("--eval", metavar="DATA", help="evaluation data (arrays x and optional labels y)")
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE:DTYPE",
                   help="declare an input, e.g. image:Nx3x224x224:float32 (N = dynamic batch); default: from the data")
    p.add_argument("--layout", choices=["nchw", "nhwc"], help="layout of 4-D inputs declared with --input")
    g = p.add_argument_group("image folders")
    g.add_argument("--image-size", metavar="HxW", help="resize images, e.g. 224x224")
    g.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean after scaling to [0,1]")
    g.add_argument("--std", metavar="S[,S,S]", help="per-channel std after scaling to [0,1]")
    g.add_argument("--image-layout", choices=["nchw", "nhwc"], default="nchw")
    g.add_argument("--grayscale", action="store_true")
    q = p.add_argument_group("quantization")
    q.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"], default=None)
    q.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="per-channel weight scales (default: on)")
    q.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights in every int8 layer, ONNX and OpenVINO IR (default: on, so that int8 artifacts "
                        "hold on x86 CPUs without VNNI, whose u8*s8 kernels saturate; --no-reduce-range for "
                        "VNNI or arm64 targets only)")
    q.add_argument("--weight-type", choices=["s8", "u8"], default=None,
                   help="ONNX int8 weight type: s8 (fast u8*s8 kernels; default) or u8 (u8*u8, never saturates, "
                        "slower on VNNI CPUs)")
    q.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                   help="try the format's int8 recipes in turn until one passes the gate (default: on, unless a "
                        "recipe flag such as --reduce-range, --weight-type, --keep-fp32 pins the recipe)")
    q.add_argument("--search-budget", type=_budget, default=(None, None), metavar="N|TIME|N,TIME",
                   help="try at most N recipes per int8 artifact (default 4), and/or start no further recipe once "
                        "TIME (e.g. 90s, 10m, 1h) has gone into the artifact's search (default: no time bound)")
    q.add_argument("--keep-fp32", action="append", default=[], metavar="PATTERN",
                   help="keep nodes whose name matches this glob in float")
    q.add_argument("--model-type", choices=["auto", "cnn", "transformer"], default=None,
                   help="NNCF's quantization scheme for OpenVINO int8 (default auto: transformer for attention graphs)")
    q.add_argument("--fast-bias-correction", action=argparse.BooleanOptionalAction, default=None,
                   help="NNCF's fast bias correction for OpenVINO int8 (default: off, full bias correction; "
                        "measured more accurate on small CNNs)")
    q.add_argument("--max-drop", type=float, default=None, metavar="X",
                   help="OpenVINO int8 with accuracy control: revert the layers that cost accuracy to float until "
                        "the metric drops by at most X (accuracy points; needs labelled --eval, or --metric)")
    q.add_argument("--metric", metavar="FILE.py:FUNC|cosine",
                   help="metric(predictions, labels) -> float, higher is better, for --max-drop, or 'cosine' (mean "
                        "per-sample cosine to the float model in percent; needs no labels) "
                        "(default: top-1 accuracy in percent)")
    q.add_argument("--max-calib-samples", type=int, default=None)
    q.add_argument("--min-calib-samples", type=int, default=None,
                   help="below this count a warning is recorded (default 32)")
    c = p.add_argument_group("pruning and quantization-aware training (before export)")
    c.add_argument("--prune", type=float, metavar="SPARSITY", help="magnitude-prune to this fraction of zero weights")
    c.add_argument("--prune-schedule", choices=["constant", "polynomial"], default="constant")
    c.add_argument("--prune-structure", choices=["unstructured", "2:4", "channels"], default="unstructured")
    c.add_argument("--prune-scope", choices=["global", "layer"], default="global",
                   help="rank weights over all layers at once or layer by layer (unstructured)")
    c.add_argument("--train", metavar="FILE.py:FIT",
                   help="your training hook fit(model, steps, callbacks): fine-tunes the model being compressed "
                        "with your data and loss (without it, pruning is one-shot)")
    c.add_argument("--train-steps", type=int, default=300, metavar="N", help="optimizer steps for --train")
    c.add_argument("--qat", action="store_true",
                   help="quantization-aware training with --train (NNCF for PyTorch, TensorFlow Model Optimization "
                        "for tf_keras); the int8 artifacts are converted from the trained model (implies --int8)")
    c.add_argument("--prune-max-drop", type=float, default=1.0, metavar="POINTS",
                   help="largest accuracy drop of the pruned model against the original (default 1.0; without labels "
                        "the top-1 agreement must be at least 1 - POINTS/100)")
    c.add_argument("--prune-min-cosine", type=_cosine_or_none, default=argparse.SUPPRESS,
                   metavar="X|none", help="without labelled --eval: the pruned model's mean cosine with the original "
                                          "on every output must reach X (default 0.9; 'none' to skip), and its top-1 "
                                          "agreement 1 - POINTS/100")
    v = p.add_argument_group("verification")
    v.add_argument("--reference-device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the source model runs for the reference outputs (auto: CUDA when present)")
    add_tolerance(v)
    v.add_argument("--output", action="append", default=[], metavar="NAME:KIND", dest="output_kinds",
                   help="how output NAME is judged: classification (top-1 agreement, accuracy), regression, "
                        "embedding or detection (cosine mean and minimum, relative error, SQNR); undeclared "
                        "outputs are inferred (class scores only when named or shaped so)")
    v.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_profiles(v, "default: $EDGEKIT_TARGET_CPU, else host,x86-avx2")
    v.add_argument("--strict", action="store_true",
                   help="a requested format or precision the source's framework does not support is an error "
                        "(default: a warning, and no artifact for it)")
    v.add_argument("--allow-partial", action="store_true",
                   help="when some artifacts fail, still write the bundle with those that passed (the failed ones "
                        "are recorded in the manifest; the exit code is still 1)")
    add_isolation(v)
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="memory the export may use, e.g. 3G or 3072M: picks how many samples run at once "
                        "(reference, verification); a stage that peaks above it is a warning")
    add_common(p)
    p.set_defaults(run=run)


def _cosine_or_none(text):
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a cosine in [-1, 1] or 'none', got {text!r}") from exc


def _size(text):
    """``--max-memory``: bytes, or a size such as 3G, 3072M, 2GiB."""
    from edgekit.errors import ConfigError
    from edgekit.memory import parse_size
    try:
        return parse_size(text, "--max-memory")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--max-memory: ")) from exc


_UNITS = {"s": 1, "m": 60, "h": 3600}


def _budget(text):
    """``--search-budget``: "N" recipes, "TIME" (90s, 10m, 1h), or both, comma-separated."""
    count = seconds = None
    for item in text.split(","):
        item = item.strip().lower()
        try:
            if item[-1:] in _UNITS:
                if seconds is not None or float(item[:-1]) <= 0:
                    raise ValueError
                seconds = float(item[:-1]) * _UNITS[item[-1]]
            else:
                if count is not None or int(item) < 1:
                    raise ValueError
                count = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected N (recipes, >= 1), TIME (a number > 0 with s, m or h: 90s, 10m) or N,TIME; got {text!r}")
    return count, seconds


def _floats(text, flag):
    from edgekit.errors import ConfigError
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from exc


def parse_input_spec(text, layout):
    """``name:Nx3x224x224:float32`` -> TensorInfo (N or ? = dynamic)."""
    import numpy as np

    from edgekit.errors import ConfigError
    from edgekit.runtime import TensorInfo
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(f"--input {text!r}: expected NAME:SHAPE:DTYPE, e.g. x:Nx1x8x8:float32")
    name, shape_text, dtype = parts
    try:
        shape = tuple(None if d in ("N", "?", "-1") else int(d) for d in shape_text.lower().replace("n", "N").split("x"))
        dtype = np.dtype(dtype)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--input {text!r}: SHAPE is like Nx3x224x224 and DTYPE a numpy dtype") from exc
    return TensorInfo(name=name, shape=shape, dtype=dtype, layout=layout if len(shape) == 4 else None)


def _preprocess(args):
    from edgekit.data import ImagePreprocess
    if not (args.image_size or args.mean or args.std or args.grayscale):
        return None
    kwargs = {"layout": args.image_layout, "grayscale": args.grayscale}
    if args.image_size:
        kwargs["size"] = tuple(int(v) for v in _floats(args.image_size.replace("x", ","), "--image-size"))
    if args.mean:
        kwargs["mean"] = _floats(args.mean, "--mean")
    if args.std:
        kwargs["std"] = _floats(args.std, "--std")
    return ImagePreprocess(**kwargs)


def _prune_options(args):
    from edgekit.config import PruneOptions
    from edgekit.errors import ConfigError
    if args.prune is None:
        if (args.train and not args.qat) or args.prune_structure != "unstructured" or args.prune_schedule != "constant":
            raise ConfigError("--train, --prune-structure and --prune-schedule need --prune SPARSITY (or --qat)")
        return None
    return PruneOptions(sparsity=args.prune, schedule=args.prune_schedule, structure=args.prune_structure,
                        scope=args.prune_scope, steps=args.train_steps, train=args.train,
                        max_accuracy_drop=args.prune_max_drop,
                        **({"min_cosine": args.prune_min_cosine} if "prune_min_cosine" in args else {}))


def _qat_options(args):
    from edgekit.config import QATOptions
    from edgekit.errors import ConfigError
    if not args.qat:
        return None
    if not args.train:
        raise ConfigError("--qat needs --train FILE.py:fit (QAT without training is post-training int8: --int8)")
    return QATOptions(train=args.train, steps=args.train_steps)


def _output_kinds(items) -> dict:
    from edgekit.errors import ConfigError
    kinds = {}
    for item in items:
        name, sep, kind = item.rpartition(":")
        if not sep or not name:
            raise ConfigError(f"--output {item!r}: expected NAME:KIND, e.g. boxes:regression")
        kinds[name] = kind
    return kinds


def run(args) -> int:
    from edgekit.config import ExportConfig, QuantizeOptions, parse_tolerance_overrides
    from edgekit.errors import ParityError
    from edgekit.pipeline import export

    recipe = {k: v for k, v in {
        "calibration_method": args.calibration_method, "per_channel": args.per_channel,
        "reduce_range": args.reduce_range, "weight_type": args.weight_type, "model_type": args.model_type,
        "fast_bias_correction": args.fast_bias_correction, "max_drop": args.max_drop}.items() if v is not None}
    if args.keep_fp32:
        recipe["keep_fp32"] = tuple(args.keep_fp32)
    # A recipe flag pins the recipe: the search would otherwise replace what was asked for.
    search = args.search if args.search is not None else not recipe
    quant = {**recipe, **{k: v for k, v in {
        "max_calibration_samples": args.max_calib_samples, "min_calibration_samples": args.min_calib_samples,
        "metric": args.metric, "search_budget": args.search_budget[0],
        "search_time": args.search_budget[1]}.items() if v is not None}}
    precisions = ["fp32"] + [name for flag, name in ((args.fp16, "fp16"), (args.dynamic_int8, "dynamic"),
                                                     (args.int8, "int8"), (args.int16x8, "int16x8")) if flag]
    config = ExportConfig(targets=args.to, precisions=tuple(precisions),
                          quantize=QuantizeOptions(int8_io=args.int8_io, search=search, **quant),
                          tolerances=parse_tolerance_overrides(args.tol), reference_device=args.reference_device,
                          opset=args.opset, seed=args.seed, measure_latency=not args.no_latency,
                          isolate=args.isolate, timeout=args.timeout, workers=args.workers,
                          ray_address=args.ray_address, output_kinds=_output_kinds(args.output_kinds),
                          prune=_prune_options(args), qat=_qat_options(args), emulation=args.emulation,
                          allow_partial=args.allow_partial, strict=args.strict, max_memory=args.max_memory,
                          **({"target_cpu": args.target_cpu} if args.target_cpu else {}))
    specs = [parse_input_spec(t, args.layout) for t in args.input] or None
    # load, data, reference, golden samples; per artifact export + verify (a recipe search adds more).
    progress = Progress(4 + (2 if config.prune else 0) + (2 if config.qat else 0)
                        + 2 * len(config.targets) * len(config.precisions),
                        quiet=args.quiet or args.json)
    try:
        report = export(args.model, calib=args.calib, eval=args.eval, out=args.out, weights=args.weights,
                        trust_model=args.trust_model, custom_objects=args.custom_objects,
                        input_specs=specs, preprocess=_preprocess(args), config=config, progress=progress)
    except ParityError as exc:
        if exc.report is not None:
            print_report(exc.report, args)
        raise
    print_report(report, args)
    return 0
