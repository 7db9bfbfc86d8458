"""What the running machine offers: the device to use and whether bf16 runs natively on it.

Everything here is detected at run time, never assumed from a CPU name; the layers above (models,
evaluation, training) ask this module instead of probing torch themselves.
"""

from __future__ import annotations

import torch

from genmodels.errors import GenmodelsError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device.

    Raises:
        GenmodelsError: the name is not a torch device, or names CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise GenmodelsError(f"device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise GenmodelsError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenmodelsError(f"device {name} asked for but no CUDA device is available; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenmodelsError(
                f"device {name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: an Ampere+ GPU, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
