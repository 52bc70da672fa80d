"""Device names to torch devices, one rule for the server, training and the CLI."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` checked.

    Raises ``ValueError`` for a CUDA device on a machine without CUDA (a silent fall-back to the CPU would
    make a GPU deployment look up and run 50× slower) and for any other device type.
    """
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device
