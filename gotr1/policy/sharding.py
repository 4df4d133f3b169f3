"""FSDP2 (``fully_shard``) for a Janus-Pro policy: weights, gradients and AdamW state split across ranks.

Full fine-tuning of Janus-Pro-7B does not fit one 80 GB GPU with a replicated AdamW state; sharded over
the ranks of ``torchrun`` it does. FSDP2 gathers a unit's parameters only around forwards it knows, but
gotr1 reads parameters outside module forwards twice: the KV-cached decode loop calls each decoder
layer's projections one by one, and the GRPO loss applies the text head's weight inside a fused kernel.
So:

- every decoder layer is an FSDP unit, and the whole policy is the root unit (embeddings, heads, vision
  tower, VQ model);
- the teacher-forced forward (:func:`gotr1.policy.forward.teacher_forced_hidden`) is registered as a
  forward method of the root, so it gathers the root's parameters; FSDP keeps the root gathered after a
  forward until the backward has reduce-scattered its gradients, so the heads can be applied after it;
- :func:`gathered` unshards every unit for code that runs no FSDP forward at all: the rollout.

Gradients are summed across ranks, not averaged: each rank's loss is already divided by the global
normaliser (see :mod:`gotr1.grpo.update`), exactly as in the replicated multi-rank path.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import MethodType

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from gotr1.policy.forward import SHARDED_FORWARD, forward_hidden
from gotr1.policy.model import janus_parts

# A root forward method that computes nothing: calling it runs FSDP's root pre-forward (lazy initialisation,
# the root's parameters gathered) before :func:`gathered` unshards the layers by hand.
_GATHER_ROOT = "gotr1_gather_root"

# Full (unsharded) state dicts, gathered on rank 0 into CPU memory: what a Hugging Face checkpoint holds.
_FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


def is_sharded(model) -> bool:
    """Whether ``model`` was sharded by :func:`shard_policy`."""
    return isinstance(model, FSDPModule)


def _units(model) -> list:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def shard_policy(model):
    """Shard ``model`` (a Janus-Pro policy, plain or PEFT) in place over all ranks; returns it.

    Call after the trainable parameters are chosen and weights loaded, before the optimizer is built.
    On CUDA the gathered parameters are bf16 (the trainer's compute dtype) and gradients are reduced in
    float32; on the CPU (tests, gloo) everything stays in the parameters' dtype.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("fsdp: torch.distributed is not initialised; run under torchrun (gotr1 grpo does it)")
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    on_cuda = device.type == "cuda"
    precision = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if on_cuda else None,
                                     reduce_dtype=torch.float32 if on_cuda else None)
    for layer in janus_parts(model).model.language_model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=precision)
    fully_shard(model, mesh=mesh, mp_policy=precision)
    for unit in _units(model):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no pre-multiplied sum
    # Instance attributes, not class methods: the policy's class is transformers' or PEFT's.
    model.__dict__[SHARDED_FORWARD] = MethodType(_fresh_hidden, model)
    model.__dict__[_GATHER_ROOT] = MethodType(lambda self: None, model)
    register_fsdp_forward_method(model, SHARDED_FORWARD)
    register_fsdp_forward_method(model, _GATHER_ROOT)
    return model


def _fresh_hidden(model, batch):
    """:func:`forward_hidden` with outputs that are new tensors, not views of the hidden states: FSDP hooks
    the root's outputs for the backward, and an in-place op on a view would bypass its hook. Outputs that
    are already new tensors (the image states are concatenated) are not copied."""
    return tuple(t if t._base is None else t.clone() for t in forward_hidden(model, batch))


@contextmanager
def gathered(model):
    """Every parameter of a sharded ``model`` whole (unsharded) inside the block, resharded after it.

    For code that reads parameters without running FSDP forwards (the KV-cached rollout); a no-op for an
    unsharded model. Peak memory: one full copy of the weights in the compute dtype.
    """
    if not is_sharded(model):
        yield model
        return
    with torch.no_grad():
        getattr(model, _GATHER_ROOT)()
    units = _units(model)
    for unit in units:
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()


def release(model) -> None:
    """Reshard the root unit of a sharded ``model`` after no-grad forwards (FSDP keeps the root gathered
    after a forward, expecting a backward); a no-op otherwise."""
    if is_sharded(model):
        model.reshard()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) parameter or gradient; a collective when sharded."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_model_state(model) -> dict:
    """What a checkpoint saves of ``model``, unsharded, on rank 0 (CPU tensors), empty on other ranks; every
    rank must call it. A PEFT model saves only its trainable tensors (adapters, GoT tag rows): those alone
    are gathered, not the frozen base weights."""
    if not hasattr(model, "peft_config"):
        return get_model_state_dict(model, options=_FULL_ON_RANK0)
    keep = dist.get_rank() == 0
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            whole = full_tensor(param.detach())
            if keep:
                state[name] = whole.cpu()
    return state


def full_optimizer_state(model, optimizer) -> dict:
    """The unsharded optimizer state, keyed by parameter name, on rank 0; every rank must call it."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL_ON_RANK0)


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Shard a :func:`full_optimizer_state` (read by every rank) into ``optimizer`` of this run's ranks."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
