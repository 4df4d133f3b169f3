"""The image phase of a rollout: classifier-free-guided decoding of image tokens, and the VQ decoder.

Janus-Pro CFG doubles the batch: the conditional rows continue from the chain's KV cache (no re-prefill,
unlike GoT-R1's reference loop), the unconditional rows hold BOS, pads and ``<begin_of_image>`` over
the same span (pads attended, as in Janus-Pro and GoT-R1), and the next token is drawn from
``uncond + guidance * (cond - uncond)`` by ``gotr1.kernels.sampling.sample``. Both halves share one
:class:`~gotr1.rollout.kv_cache.RowCache` allocated once per batch; on CUDA the decode step can be captured
in CUDA graphs, sampling included (the kernel reads its step index from a device counter).

Log-probabilities: by default (``logprob_of="cond"``) those of the *conditional* branch,
``log_softmax(cond / temperature)``, which is what GRPO's teacher-forced forward reproduces (image-token
log-probs are the conditional branch's unless ``cfg_in_loss``, see ``docs/architecture.md``); ``"mixed"``
returns those of the guided distribution that was actually sampled. float32 either way. Guidance,
temperature, top-k/p and seed are the chains' :class:`~gotr1.rollout.sampling.Sampling`.
"""

from __future__ import annotations

import torch

from gotr1.kernels.sampling import sample
from gotr1.policy.lora import merged_tag_rows
from gotr1.policy.model import got_token_ids, janus_parts, num_image_tokens
from gotr1.rollout.batches import ChainBatch, ImageBatch
from gotr1.rollout.kv_cache import LlamaStepper, RowCache

# The image phase draws from its own stream of the rollout seed: step indices start here, far past any chain step.
IMAGE_STEP_OFFSET = 1 << 20
# Attention-span granularity of the CUDA graphs (slots); each bucket costs one capture per batch.
SPAN_BUCKET = 128


def _prefill_unconditional(stepper, uncond: RowCache, cond: RowCache, embed, tokens) -> torch.Tensor:
    """Fill ``uncond`` with BOS, pads and ``<begin_of_image>`` over each conditional row's span.

    Returns the hidden state ``[B, H]`` at each row's ``<begin_of_image>``.
    """
    width = cond.length
    slots = torch.arange(width, device=cond.cursor.device)
    rows = torch.arange(cond.rows, device=slots.device)
    start = cond.valid[:, :width].int().argmax(dim=1)  # first real token (BOS) of a left-padded row
    end = cond.cursor  # one past the row's <begin_of_image>
    mask = (slots[None] >= start[:, None]) & (slots[None] < end[:, None])
    ids = torch.full((cond.rows, width), tokens.pad, dtype=torch.long, device=slots.device)
    ids[rows, start] = tokens.bos
    ids[rows, end - 1] = tokens.boi
    hidden = stepper.prefill(uncond, embed(ids), mask)
    return hidden[rows, end - 1]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _capture_graph(decode_one, span: int, state: list, pool):
    """``decode_one(span)`` captured in a CUDA graph (sharing ``pool``); the warm-up's effects on ``state`` undone."""
    if not state[0].is_cuda:
        raise ValueError("cuda_graph: needs the model on a CUDA device")
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        decode_one(span)  # warm-up outside the graph: library handles, allocator pools
    torch.cuda.current_stream().wait_stream(side)
    for tensor, copy in zip(state, saved):
        tensor.copy_(copy)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA calls during the capture (NCCL's watchdog under FSDP2, a reward
    # thread) must not invalidate it.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        decode_one(span)
    return graph


def _replay_in_graphs(decode_one, cache: RowCache, count: int, state: list) -> None:
    """Run ``decode_one(span)`` ``count`` times through CUDA graphs, one graph per attention-span bucket.

    A graph needs fixed shapes, so attention reads a fixed span of slots; spans grow in buckets of
    ``SPAN_BUCKET`` (one capture each) instead of reading the full capacity from the first token.
    ``state`` lists the tensors a step mutates (restored after each capture's warm-up).
    """
    graphs = {}
    start = cache.length
    for i in range(count):
        span = min(cache.capacity, _round_up(start + i + 1, SPAN_BUCKET))
        if span not in graphs:
            pool = next(iter(graphs.values())).pool() if graphs else None
            graphs[span] = _capture_graph(decode_one, span, state, pool)
        graphs[span].replay()
    cache.length = start + count


@torch.no_grad()
def generate_images(model, processor, chains: ChainBatch, logprob_of: str = "cond", cuda_graph: bool = False) -> ImageBatch:
    """Decode the image tokens that follow each chain, with classifier-free guidance.

    Parameters
    ----------
    model, processor :
        As for :func:`~gotr1.rollout.chains.generate_chains`.
    chains : ChainBatch
        Its KV cache is moved into the image cache, layer by layer (``chains.cache`` becomes None). Its
        ``sampling`` gives the guidance scale (1 disables CFG and the unconditional rows), temperature, top-k/p
        and seed; the noise of row ``r`` at image step ``i`` is keyed by ``(seed, r, IMAGE_STEP_OFFSET + i)``.
    logprob_of : {"cond", "mixed"}
        Which distribution's log-probabilities to return (see the module docstring).
    cuda_graph : bool
        Replay the decode step (transformer, guidance, sampling) from CUDA graphs (CUDA only).

    Returns
    -------
    ImageBatch
    """
    if logprob_of not in ("cond", "mixed"):
        raise ValueError(f"logprob_of: expected 'cond' or 'mixed', got {logprob_of!r}")
    if chains.cache is None:
        raise ValueError("chains: its KV cache was already used by generate_images; generate the chains again")
    sampling = chains.sampling
    janus = janus_parts(model)
    lm = janus.model.language_model
    tokens = got_token_ids(processor)
    stepper, embed, head = LlamaStepper(lm), janus.get_input_embeddings(), janus.model.generation_head
    rows, steps, cfg = len(chains), num_image_tokens(janus), sampling.guidance > 1
    width = chains.cache.length
    cache = RowCache.continued(chains.cache, 2 * rows if cfg else rows, width + steps)
    chains.cache = None
    hidden = chains.boi_hidden
    if cfg:
        with merged_tag_rows(model):
            uncond_hidden = _prefill_unconditional(stepper, cache.view(slice(rows, 2 * rows)),
                                                   cache.view(slice(0, rows)), embed, tokens)
        hidden = torch.cat([hidden, uncond_hidden])
    cache.length = width

    device, residual = hidden.device, chains.boi_hidden.dtype
    image_ids = torch.empty((rows, steps), dtype=torch.long, device=device)
    image_logprobs = torch.empty((rows, steps), dtype=torch.float32, device=device)
    # Device-side counters (the kernel's step, the output column) and the previous token: a step reads and
    # advances them without the host, so the same step replays from a CUDA graph.
    kernel_step = torch.full((1,), IMAGE_STEP_OFFSET, dtype=torch.long, device=device)
    column = torch.zeros(1, dtype=torch.long, device=device)
    previous = torch.empty(rows, dtype=torch.long, device=device)

    def draw(logits: torch.Tensor) -> None:
        ids, logp = sample(
            logits[:rows],
            logits[rows:] if cfg else None,
            guidance=sampling.guidance,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            seed=sampling.seed,
            step=kernel_step,
            logprob_of=logprob_of,
        )
        image_ids.index_copy_(1, column, ids[:, None])
        image_logprobs.index_copy_(1, column, logp.float()[:, None])
        previous.copy_(ids)
        kernel_step.add_(1)
        column.add_(1)

    def decode_one(span: int | None = None) -> None:
        # In the dtype of the text embeddings, as the teacher-forced forward's concatenation promotes them (under
        # autocast with float32 weights the aligner's output is bf16): the same residual stream in both.
        embeds = janus.prepare_embeddings_for_image_generation(previous).to(residual)
        draw(head(stepper.step(cache, torch.cat([embeds, embeds]) if cfg else embeds, span=span)))

    draw(head(hidden))
    if cuda_graph:
        state = [cache.cursor, cache.position, cache.valid, kernel_step, column, previous]
        _replay_in_graphs(decode_one, cache, steps - 1, state)
    else:
        for _ in range(steps - 1):
            decode_one()
    return ImageBatch(image_ids, image_logprobs)


@torch.no_grad()
def decode_images(model, image_ids: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Pixels of image tokens through the VQ decoder.

    Parameters
    ----------
    model : JanusForConditionalGeneration (or a PEFT wrapper of one)
    image_ids : Tensor
        int64 ``[N, num_image_tokens]`` codebook indices.
    batch_size : int
        Images decoded at once (bounds the decoder's activation memory).

    Returns
    -------
    Tensor
        uint8 ``[N, S, S, 3]`` on the CPU: ``clip((x + 1) / 2 * 255)`` of the decoder output, truncated
        as GoT-R1's reference does.
    """
    janus = janus_parts(model)
    steps, codebook = num_image_tokens(janus), janus.config.vq_config.num_embeddings
    if image_ids.ndim != 2 or image_ids.shape[1] != steps:
        raise ValueError(f"image_ids: expected shape [N, {steps}], got {tuple(image_ids.shape)}")
    if image_ids.numel() and not (0 <= int(image_ids.min()) and int(image_ids.max()) < codebook):
        raise ValueError(f"image_ids: indices must lie in [0, {codebook})")
    device = janus.model.vqmodel.post_quant_conv.weight.device
    pixels = [
        ((janus.decode_image_tokens(chunk.to(device)).float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu()
        for chunk in image_ids.split(batch_size)
    ]
    return torch.cat(pixels) if pixels else torch.empty((0, 0, 0, 3), dtype=torch.uint8)
