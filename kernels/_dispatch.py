"""Where a public kernel entry point runs: compiled Triton, the Triton interpreter, or plain torch.

One rule for every module of ``gotr1.kernels``:

* CUDA tensors run the compiled Triton kernels;
* CPU tensors run the same Triton kernels under the interpreter when ``TRITON_INTERPRET=1`` was set
  before ``gotr1.kernels`` was imported (the tests do this), so the kernel code itself is exercised;
* anything else (CPU without the interpreter, other devices, no Triton) runs the torch reference.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
except ImportError:  # pragma: no cover - triton is absent on some platforms
    triton = None


def _interpreter_flag() -> bool:
    """Whether Triton decorates kernels for its interpreter, read the way Triton itself reads it."""
    if triton is None:
        return False
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# Read once, at import: ``@triton.jit`` chose interpreter or compiler when the kernel modules were
# imported (right after this one), and flipping the variable later cannot change that choice.
INTERPRETING: bool = _interpreter_flag()


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether the Triton kernels (compiled or interpreted) should process ``tensor``.

    Parameters
    ----------
    tensor : torch.Tensor
        The operation's main input; its device decides.

    Returns
    -------
    bool
        True for CUDA tensors when Triton is installed, and for CPU tensors when the interpreter is on;
        False when the torch reference should run instead.
    """
    if triton is None:
        return False
    if tensor.device.type == "cuda":
        return True
    return tensor.device.type == "cpu" and INTERPRETING
