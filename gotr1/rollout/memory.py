"""How much memory a rollout's KV caches take, known before they are allocated, and a check that they fit.

A rollout holds two caches (:class:`~gotr1.rollout.kv_cache.RowCache`): the chain phase's, ``B`` rows that
start with room for the prompt and 256 chain tokens and grow by 256 slots while chains run, and the image
phase's, ``2B`` rows with classifier-free guidance (``B`` without), each as wide as the widest chain plus the
576 image tokens. The image cache takes over the chain cache layer by layer
(:meth:`~gotr1.rollout.kv_cache.RowCache.continued`), so the peak is the image cache and one buffer of the
chain cache. Every slot of a row costs ``2 x layers x kv_heads x head_dim`` values: at Janus-Pro-1B in bf16,
192 KiB; at 7B, 480 KiB. With GoT-R1's settings (8 prompts x 16 samples, chains up to 600 tokens) a 1B rollout
on one GPU needs about 60 GB of image cache once any chain reaches the cap, so the estimate is checked before
the first allocation, and a rollout that cannot fit stops with the numbers and the settings that would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gotr1.rollout.kv_cache import GROW_SLOTS, grown_capacity, slot_bytes
from gotr1.rollout.sampling import Sampling

_GIB = 2**30


def chain_cache_slots(prompt_tokens: int, max_chain_tokens: int) -> int:
    """Slots the chain phase's cache starts with: the prompt, then room for ``GROW_SLOTS`` chain tokens at most
    (most chains end well before the cap; a longer one grows the cache)."""
    return prompt_tokens + min(max_chain_tokens + 1, GROW_SLOTS)


@dataclass(frozen=True)
class RolloutMemory:
    """Bytes of a rollout's KV caches when every chain runs to the cap (the worst case).

    Attributes
    ----------
    rows, image_rows : int
        Rows of the chain cache (prompts x samples) and of the image cache (twice as many with CFG).
    chain_slots, image_slots : int
        Slots per row of each cache at its largest.
    slot_bytes : int
        Bytes of one row's slot (keys and values of every layer, and its flag).
    chain_bytes, image_bytes : int
        Each cache at its largest.
    peak_bytes : int
        The most both hold at once: the image cache while it takes the chain cache over, or the chain cache
        while it grows, whichever is more.
    """

    rows: int
    image_rows: int
    chain_slots: int
    image_slots: int
    slot_bytes: int
    chain_bytes: int
    image_bytes: int
    peak_bytes: int

    def describe(self) -> str:
        """One line: the peak and how it splits."""
        return (f"{self.peak_bytes / _GIB:.1f} GiB at the peak (image cache {self.image_bytes / _GIB:.1f} GiB: "
                f"{self.image_rows} rows x {self.image_slots} slots x {self.slot_bytes / 1024:.0f} KiB; chain cache "
                f"{self.chain_bytes / _GIB:.1f} GiB: {self.rows} rows x {self.chain_slots} slots)")


def rollout_memory(janus_config, rows: int, prompt_tokens: int, sampling: Sampling,
                   dtype: torch.dtype) -> RolloutMemory:
    """The KV memory of a rollout of ``rows`` rows whose prompts are ``prompt_tokens`` wide (left-padded), every
    chain at ``sampling.max_chain_tokens``, caches in ``dtype``.

    Parameters
    ----------
    janus_config : JanusConfig
        Its ``text_config`` (layers, key-value heads, head size) and ``vision_config.num_image_tokens``.
    rows : int
        Prompts x samples.
    prompt_tokens : int
        The widest prompt, in tokens (BOS and the chat format included).
    sampling : Sampling
        ``max_chain_tokens`` and ``guidance`` (> 1 doubles the image cache's rows).
    dtype : torch.dtype
        What the caches hold: the rollout's compute dtype.
    """
    per_slot = slot_bytes(janus_config.text_config, dtype)
    per_row = 2 * 8  # cursor and position, int64
    layers = janus_config.text_config.num_hidden_layers
    width = prompt_tokens + sampling.max_chain_tokens + 1  # prompt, chain, <begin_of_image>
    first = chain_cache_slots(prompt_tokens, sampling.max_chain_tokens)
    chain_slots = grown_capacity(first, width)
    image_rows = 2 * rows if sampling.guidance > 1 else rows
    image_slots = width + int(janus_config.vision_config.num_image_tokens)
    chain_bytes = rows * (chain_slots * per_slot + per_row)
    image_bytes = image_rows * (image_slots * per_slot + per_row)
    buffer = lambda slots: rows * slots * (per_slot - 1) // (2 * layers)  # noqa: E731 - one layer's keys
    # Growing copies one buffer at a time (the old one is freed after its copy); the image cache is built
    # from the chain cache the same way.
    growing = chain_bytes + (buffer(chain_slots - GROW_SLOTS) if chain_slots > first else 0)
    peak = max(growing, image_bytes + buffer(chain_slots))
    return RolloutMemory(rows, image_rows, chain_slots, image_slots, per_slot, chain_bytes, image_bytes, peak)


def available_bytes(device: torch.device) -> int | None:
    """Bytes a CUDA ``device`` can still allocate (free in the driver plus what torch's allocator holds unused);
    None elsewhere (the CPU's memory is not checked)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _largest(fits, high: int) -> int:
    """The largest ``n`` in ``[0, high]`` with ``fits(n)`` (monotone), or -1 when none."""
    low, best = 0, -1
    while low <= high:
        mid = (low + high) // 2
        if fits(mid):
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def check_rollout_memory(janus_config, rows: int, prompt_tokens: int, sampling: Sampling, dtype: torch.dtype,
                         available: int | None, *,
                         rows_setting: str = "prompts x samples per rollout") -> RolloutMemory:
    """Estimate a rollout's KV memory and raise before allocating when it exceeds ``available`` bytes.

    ``available`` None skips the check (CPU). The error names the estimate and the settings that would fit:
    the longest chain cap at these rows, and the most rows (``rows_setting`` says what sets them) at this cap.

    Raises
    ------
    MemoryError
        With the numbers, when the peak exceeds ``available``.
    """
    need = rollout_memory(janus_config, rows, prompt_tokens, sampling, dtype)
    if available is None or need.peak_bytes <= available:
        return need

    def fits(**change) -> bool:
        settings = {"rows": rows, "cap": sampling.max_chain_tokens, **change}
        capped = Sampling(max_chain_tokens=settings["cap"], guidance=sampling.guidance)
        return rollout_memory(janus_config, settings["rows"], prompt_tokens, capped, dtype).peak_bytes <= available

    cap = _largest(lambda c: fits(cap=c), sampling.max_chain_tokens)
    most_rows = _largest(lambda r: fits(rows=r), rows)
    options = []
    if cap >= 0:
        options.append(f"max_chain_tokens <= {cap} at {rows} rows")
    if most_rows >= 1:
        options.append(f"at most {most_rows} rows ({rows_setting}) at max_chain_tokens={sampling.max_chain_tokens}")
    raise MemoryError(
        f"rollout: the KV caches of {rows} rows ({rows_setting}) with chains up to max_chain_tokens="
        f"{sampling.max_chain_tokens} after {prompt_tokens}-token prompts need {need.describe()}, but only "
        f"{available / _GIB:.1f} GiB can be allocated. Settings that fit: "
        f"{'; or '.join(options) if options else 'none at these widths: use a device with more memory'} "
        f"(or more ranks, each rolling out its share of the prompts).")
