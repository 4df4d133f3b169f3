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

from gotr1.policy.precision import compute_dtype

# Slots added when a chain outgrows its cache: growth copies the cache, so grow in large steps.
GROW_SLOTS = 256


def grown_capacity(capacity: int, slots: int) -> int:
    """The capacity a cache of ``capacity`` slots has once it grew, ``GROW_SLOTS`` at a time, to hold ``slots``."""
    return capacity + GROW_SLOTS * max(0, -(-(slots - capacity) // GROW_SLOTS))


def decoder_weight(language_model) -> torch.Tensor:
    """A weight that gives the decoder's dtype and device: its final norm's. Not the embedding's: with PEFT's
    trainable tokens, reading ``embed_tokens.weight`` rebuilds the whole ``[V, H]`` table."""
    return language_model.norm.weight


def _head_dim(text_config) -> int:
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def slot_bytes(text_config, dtype: torch.dtype) -> int:
    """Bytes one row's slot takes in a :class:`RowCache` of a Llama-style ``text_config``: keys and values of
    every layer, plus its validity flag."""
    per_layer = 2 * text_config.num_key_value_heads * _head_dim(text_config) * dtype.itemsize
    return text_config.num_hidden_layers * per_layer + 1


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
        """Empty buffers for ``rows`` rows of ``capacity`` slots each (allocated once); ``dtype`` defaults to the
        weights' (the rollout passes the dtype it computes in, see :func:`gotr1.policy.precision.compute_dtype`)."""
        cfg = language_model.config
        weight = decoder_weight(language_model)
        dtype, device = dtype or weight.dtype, device or weight.device
        shape = (rows, cfg.num_key_value_heads, capacity, _head_dim(cfg))
        layers = cfg.num_hidden_layers
        # Zeroed, not empty: masked slots still enter attention as 0 * value, and garbage could be NaN.
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
            valid=torch.zeros(rows, capacity, dtype=torch.bool, device=device),
            cursor=torch.zeros(rows, dtype=torch.long, device=device),
            position=torch.zeros(rows, dtype=torch.long, device=device),
        )

    @classmethod
    def continued(cls, source: "RowCache", rows: int, capacity: int) -> "RowCache":
        """A cache of ``rows`` rows and ``capacity`` slots whose first ``source.rows`` rows continue ``source``
        (its slots, cursors and positions; the other rows start empty), built layer by layer while ``source``'s
        buffers are released, so the peak holds this cache and one buffer of ``source``, never both caches.
        ``source`` is left without buffers."""
        n, mine = source.length, source.rows
        if rows < mine or n > capacity:
            raise ValueError(f"cache: cannot continue {mine} rows x {n} slots in {rows} rows x {capacity} slots")
        keys, values = [], []
        for i in range(len(source.keys)):
            for built, old in ((keys, source.keys), (values, source.values)):
                new = old[i].new_zeros(rows, old[i].shape[1], capacity, old[i].shape[3])
                new[:mine, :, :n] = old[i][:, :, :n]
                built.append(new)
                old[i] = None
        valid = source.valid.new_zeros(rows, capacity)
        valid[:mine, :n] = source.valid[:, :n]
        cursor, position = source.cursor.new_zeros(rows), source.position.new_zeros(rows)
        cursor[:mine], position[:mine] = source.cursor, source.position
        return cls(keys=keys, values=values, valid=valid, cursor=cursor, position=position, length=n)

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes its buffers hold (keys, values, flags, cursors, positions)."""
        tensors = [*self.keys, *self.values, self.valid, self.cursor, self.position]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

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
        bias = None
        for i, layer in enumerate(self.lm.layers[: self.lm.config.num_hidden_layers]):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(rows, steps, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if bias is None:
                # The additive mask SDPA would build from the bool one at every layer, built once per call.
                bias = torch.zeros(mask.shape, dtype=compute_dtype(q), device=q.device).masked_fill_(~mask, -torch.inf)
            write(cache.keys[i], k)
            write(cache.values[i], v)
            n = cache.length
            out = F.scaled_dot_product_attention(
                q,
                cache.keys[i][:, :, :n],
                cache.values[i][:, :, :n],
                attn_mask=bias,
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
            cache.grow(grown_capacity(cache.capacity, cache.length + 1))
            span = cache.length + 1
        rows = torch.arange(cache.rows, device=embeds.device)
        slot = cache.cursor
        cache.length = span
        # A device tensor, not a Python True: index_put_ of a host scalar would not replay from a CUDA graph.
        cache.valid[rows, slot] = torch.ones((), dtype=torch.bool, device=embeds.device) if live is None else live

        def write(buffer, x):
            buffer[rows, :, slot] = x[:, :, 0].to(buffer.dtype)  # under autocast rotary keys come out float32

        mask = cache.valid[:, None, None, : cache.length]
        hidden = self._layers(embeds[:, None], cache.position[:, None], cache, write, mask)
        advance = 1 if live is None else live.long()
        cache.cursor.add_(advance)
        cache.position.add_(advance)
        return hidden[:, 0]
