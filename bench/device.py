"""Device helpers shared by training, evaluation and the benchmarks: which device, and mixed-precision autocast.

A low-layer module: it imports only torch.
"""
from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """``--device`` if given, else CUDA when available, else the CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r} is not supported: use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def amp_dtype(precision: str, device) -> torch.dtype | None:
    """The autocast dtype of a precision setting: bf16 for ``bf16``, and for ``auto`` on CUDA; None (fp32) otherwise.

    Args:
        precision: ``auto``, ``fp32`` or ``bf16``.
        device: the device the computation runs on.
    """
    if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device, dtype: torch.dtype | None):
    """A ``torch.autocast`` context for ``device``: to ``dtype`` (e.g. bf16), or disabled (full precision) for None.

    Args:
        device: a ``torch.device`` or its name.
        dtype: the autocast dtype, or None.
    """
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype or torch.float32,
                          enabled=dtype is not None)
