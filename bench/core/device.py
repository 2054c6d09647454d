"""Device helpers shared by training, evaluation and the benchmarks: which device, and mixed-precision autocast.

A low-layer module: it imports only torch (and ctypes, for glibc's ``mallopt``).
"""
from __future__ import annotations

import ctypes

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_kept: bool | None = None


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


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse instead of handing it back to the system (allocations up
    to 1 GiB come from the heap, which is never trimmed). A CPU training step allocates and frees the same large
    activations every step; by default each one is a fresh ``mmap`` whose pages fault in again: on this project's
    machine 14,000 page faults per quick-preset ``mse`` step and 165,000 per ``kl`` step, 10–45 % of the step's CPU
    time spent in the kernel (``results/step-speed-cpu.md``). Process-wide, once; the peak memory is unchanged.

    Returns:
        whether it applied (False where the C library is not glibc).
    """
    global _kept
    if _kept is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        except (OSError, AttributeError):
            _kept = False
    return _kept
