"""Which device a run uses: ``auto`` or a name checked against this machine before any work starts."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; any other name must be usable on this machine.

    Raises:
        ValueError: an unknown device string, or one this PyTorch build / machine does not have
            (``cuda`` without CUDA, ``cuda:3`` with two GPUs, ``mps`` off Apple silicon).
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but this PyTorch build/machine has no CUDA "
                "(torch.cuda.is_available() is False); use device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use auto or cpu")
    return device
