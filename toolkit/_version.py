__version__ = "0.1.0"


def versions() -> dict:
    """Python's, edgekit's and the installed libraries' versions edgekit drives (the manifest's
    record; a sweep cell's input hash). Light: no library is imported to ask."""
    import platform
    from importlib import metadata
    found = {"python": platform.python_version(), "edgekit": __version__}
    for name in ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "tensorflow", "keras", "tf_keras",
                 "tf2onnx", "ai-edge-litert", "litert-torch", "openvino", "nncf"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
