"""PyTorch helpers shared by the stages that run a module (the source, the OpenVINO converter)."""

from .errors import InputError


def flatten_outputs(result) -> dict:
    """A module's output (tensor, tuple/list, or dict of tensors) as ordered name -> tensor."""
    import torch
    if isinstance(result, torch.Tensor):
        return {"output": result}
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, (tuple, list)):
        return {f"output_{i}": v for i, v in enumerate(result)}
    raise InputError(f"the model returned {type(result).__name__}; expected a tensor, a tuple or a dict of tensors")
