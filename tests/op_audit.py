"""What a block of torch code would cost on a GPU, seen on the CPU: a ``TorchDispatchMode`` that records every op
that would synchronise with the host, shape a tensor by its values, turn host data into a tensor (a host-to-device
copy on CUDA), mix devices, or copy a whole weight.

On a CPU run "device" and "host" are one; two stand-ins expose what would be a host tensor on CUDA: a tensor made
from Python data (``aten.lift_fresh``), and, with ``default_device="meta"``, a tensor made without an explicit
device (it lands on ``meta`` and mixes with the real ones). Used as the CUDA-graph capture linter of the rollout's
decode step, and to count the copies of a LoRA rollout's chain steps.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

HOST_SYNC = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal", "aten::allclose"}
DATA_DEPENDENT = {"aten::nonzero", "aten::masked_select", "aten::argwhere", "aten::_unique2", "aten::unique_dim",
                  "aten::unique_consecutive", "aten::masked_scatter_"}
HOST_DATA = {"aten::lift_fresh", "aten::lift_fresh_copy"}
WEIGHT_COPIES = {"aten::index_copy", "aten::clone", "aten::_to_copy", "aten::copy_"}  # out of place, or whole


class OpAudit(TorchDispatchMode):
    """Record the ops of a block by kind: ``host_sync``, ``data_dependent``, ``host_data``, ``device_change``
    and ``weight_copy`` (an op that copies or rebuilds a tensor of at least ``weight_numel`` elements).
    With ``default_device="meta"``, a tensor made without an explicit device that meets the real ones is an
    ``undeviced`` finding, raised at once as an AssertionError (the op could not run anyway).

    ``findings`` lists ``(kind, op)`` in order; ``counts`` counts them by kind.
    """

    def __init__(self, *, weight_numel: int | None = None, default_device: str | None = None):
        super().__init__()
        self.weight_numel, self.default_device = weight_numel, default_device
        self.findings: list[tuple[str, str]] = []
        self._stack = None

    def __enter__(self):
        self._stack = ExitStack()
        if self.default_device is not None:
            self._stack.enter_context(torch.device(self.default_device))
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        self._stack.close()
        return out

    @property
    def counts(self) -> Counter:
        return Counter(kind for kind, _ in self.findings)

    def kinds(self, *kinds: str) -> list[tuple[str, str]]:
        return [f for f in self.findings if f[0] in kinds]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        inputs = {t.device for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        if self.default_device is not None and len(inputs) > 1 and any(d.type == self.default_device for d in inputs):
            self.findings.append(("undeviced", name))
            raise AssertionError(f"{name}: a tensor made without an explicit device meets the model's tensors "
                                 f"(on CUDA it would be a host tensor): {self.findings}")
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors}
        if name in HOST_SYNC:
            self.findings.append(("host_sync", name))
        if name in DATA_DEPENDENT or (name in ("aten::index", "aten::index_put_", "aten::index_put")
                                      and any(t is not None and t.dtype == torch.bool for t in args[1])):
            self.findings.append(("data_dependent", name))
        if name in HOST_DATA:
            self.findings.append(("host_data", name))
        if len(devices) > 1 and not any(d.type == self.default_device for d in devices):
            self.findings.append(("device_change", name))
        copied = args[1] if name == "aten::copy_" else out  # an in-place write of a few rows is not a copy
        if (self.weight_numel is not None and name in WEIGHT_COPIES and isinstance(copied, torch.Tensor)
                and copied.numel() >= self.weight_numel):
            self.findings.append(("weight_copy", name))
        return out
