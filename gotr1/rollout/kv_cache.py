"""A static KV cache with a cursor per row, and the decoder step of Janus's Llama language model over it.

Why not transformers' own caches: a batch of GoT chains finishes at different lengths, and the image
phase continues each row from where its chain stopped. With one write cursor per row, a row that has
finished simply stops advancing (no holes in its cache, no wasted attention), the CFG unconditional
rows share the layout of their conditional twins, and the decode step has static shapes, so it can
be captured in a CUDA graph. The step reuses the model's own modules (norms, projections, rotary
embedding, MLP), so PEFT adapters inside them apply unchanged; parity with transformers' forward is
tested in tests/test_generate.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

# Slots added when a chain outgrows its cache: growth copies the cache, so grow in large steps.
_GROW_SLOTS = 256


@dataclass
class RowCache:
    """Keys and values of every layer for ``R`` rows, and where each row stands.

    Attributes
    ----------
    keys, values : list of Tensor
        One ``[R, n_kv_heads, capacity, head_dim]`` buffer per layer, model dtype.
    valid : Tensor
        bool ``[R, capacity]``: the slot holds a token the row attends to.
    cursor : Tensor
        int64 ``[R]``: the next slot the row writes.
    position : Tensor
        int64 ``[R]``: rotary position of the row's next token (its count of real tokens).
    length : int
        Slots in use by some row (attention reads ``[:length]``); an upper bound kept on the host.
    """

    keys: list
    values: list
    valid: torch.Tensor
    cursor: torch.Tensor
    position: torch.Tensor
    length: int = 0

    @classmethod
    def allocate(cls, language_model, rows: int, capacity: int, *, dtype=None, device=None) -> "RowCache":
        """Empty buffers for ``rows`` rows of ``capacity`` slots each (allocated once)."""
        cfg = language_model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        weight = language_model.embed_tokens.weight
        dtype, device = dtype or weight.dtype, device or weight.device
        shape = (rows, cfg.num_key_value_heads, capacity, head_dim)
        layers = cfg.num_hidden_layers
        # Zeroed, not empty: masked slots still enter attention as 0 * value, and garbage could be NaN.
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
            valid=torch.zeros(rows, capacity, dtype=torch.bool, device=device),
            cursor=torch.zeros(rows, dtype=torch.long, device=device),
            position=torch.zeros(rows, dtype=torch.long, device=device),
        )

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def view(self, rows: slice) -> "RowCache":
        """The cache of a block of rows, sharing storage: writes through it land in this cache."""
        return RowCache(
            keys=[k[rows] for k in self.keys],
            values=[v[rows] for v in self.values],
            valid=self.valid[rows],
            cursor=self.cursor[rows],
            position=self.position[rows],
            length=self.length,
        )

    def grow(self, capacity: int) -> None:
        """Reallocate to ``capacity`` slots, keeping the first ``length`` (a no-op when large enough)."""
        if capacity <= self.capacity:
            return
        n = self.length
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_zeros(*old.shape[:2], capacity, old.shape[3])
                new[:, :, :n] = old[:, :, :n]
                buffers[i] = new
        valid = self.valid.new_zeros(self.rows, capacity)
        valid[:, :n] = self.valid[:, :n]
        self.valid = valid

    def copy_from(self, other: "RowCache") -> None:
        """Take over ``other``'s rows (same row count, ``other.length <= capacity``) and free its buffers."""
        n = other.length
        if other.rows != self.rows or n > self.capacity:
            raise ValueError(f"cache: cannot copy {other.rows} rows x {n} slots into {self.rows} x {self.capacity}")
        for dst, src in ((self.keys, other.keys), (self.values, other.values)):
            for i in range(len(dst)):
                dst[i][:, :, :n] = src[i][:, :, :n]
                src[i] = None  # release layer by layer, so the peak holds one layer of both
        self.valid[:, :n] = other.valid[:, :n]
        self.valid[:, n:] = False
        self.cursor.copy_(other.cursor)
        self.position.copy_(other.position)
        self.length = n


class LlamaStepper:
    """Prefill and one-token steps of a transformers ``LlamaModel`` against a :class:`RowCache`.

    Inputs are embeddings (text or image tokens alike); outputs are final-norm hidden states, which
    the caller sends through the text head or the image generation head.
    """

    def __init__(self, language_model):
        layer = language_model.layers[0]
        needed = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
        if not all(hasattr(layer, n) for n in needed) or not hasattr(layer.self_attn, "q_proj"):
            raise TypeError(
                f"language_model: expected a Llama-style decoder (Janus-Pro), got {type(language_model).__name__}"
            )
        cfg = language_model.config
        self.lm = language_model
        self.gqa = cfg.num_key_value_heads != cfg.num_attention_heads

    def _layers(self, hidden, position_ids, cache: RowCache, write, mask):
        cos, sin = self.lm.rotary_emb(hidden, position_ids)
        rows, steps, _ = hidden.shape
        for i, layer in enumerate(self.lm.layers[: self.lm.config.num_hidden_layers]):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            write(cache.keys[i], k)
            write(cache.values[i], v)
            n = cache.length
            out = F.scaled_dot_product_attention(
                q,
                cache.keys[i][:, :, :n],
                cache.values[i][:, :, :n],
                attn_mask=mask,
                scale=attn.scaling,
                enable_gqa=self.gqa,
            )
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(rows, steps, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.lm.norm(hidden)

    def prefill(self, cache: RowCache, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run ``embeds`` ``[R, T, H]`` from slot 0; ``mask`` bool ``[R, T]`` marks real tokens.

        Real tokens get rotary positions 0, 1, ... in order, whatever padding lies around them; each
        row's cursor ends after its last real token. Returns hidden states ``[R, T, H]``.
        """
        rows, steps = mask.shape
        cache.grow(steps)
        cache.length = steps
        cache.valid[:, :steps] = mask
        cache.valid[:, steps:] = False
        position_ids = (mask.long().cumsum(1) - 1).clamp_min(0)
        slots = torch.arange(steps, device=mask.device)
        causal = slots[None, :] <= slots[:, None]
        # Padding queries attend to themselves, so no softmax row is empty (an empty one gives NaN).
        attend = (causal[None] & mask[:, None, :]) | torch.eye(steps, dtype=torch.bool, device=mask.device)[None]

        def write(buffer, x):
            buffer[:, :, :steps] = x

        hidden = self._layers(embeds, position_ids, cache, write, attend[:, None])
        cache.cursor.copy_(torch.where(mask, slots + 1, 0).amax(dim=1))
        cache.position.copy_(mask.sum(dim=1))
        return hidden

    def step(self, cache: RowCache, embeds: torch.Tensor, live: torch.Tensor | None = None, span: int | None = None):
        """One token per row: ``embeds`` ``[R, H]`` -> hidden states ``[R, H]``.

        Rows with ``live`` False (finished chains) write a scratch slot they never attend to and do
        not advance. Attention reads ``span`` slots (default: one more than before, growing the
        buffers when full); a CUDA graph passes a fixed span so that its shapes never change.
        """
        if span is None:
            if cache.length + 1 > cache.capacity:
                cache.grow(cache.capacity + _GROW_SLOTS)
            span = cache.length + 1
        rows = torch.arange(cache.rows, device=embeds.device)
        slot = cache.cursor
        cache.length = span
        # A device tensor, not a Python True: index_put_ of a host scalar would not replay from a CUDA graph.
        cache.valid[rows, slot] = torch.ones((), dtype=torch.bool, device=embeds.device) if live is None else live

        def write(buffer, x):
            buffer[rows, :, slot] = x[:, :, 0]

        mask = cache.valid[:, None, None, : cache.length]
        hidden = self._layers(embeds[:, None], cache.position[:, None], cache, write, mask)
        advance = 1 if live is None else live.long()
        cache.cursor.add_(advance)
        cache.position.add_(advance)
        return hidden[:, 0]
