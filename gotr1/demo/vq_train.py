"""A VQ tokenizer for the tiny policy: training it, shipping it, and measuring what it reconstructs.

A random VQ decoder turns any token grid into noise, and image rewards on noise teach nothing. Real
checkpoints ship a trained VQ (Janus-Pro's); the embedded demo does the same with a tiny one trained on
its synthetic pictures (:data:`DEMO_VQ`, made by ``python -m gotr1.demo.vq_train``). Training it takes a few
thousand steps, ten minutes or more on two cores: far past the demo's budget, which is why it ships.

Janus decodes with L2-normalised codebook entries (``get_codebook_entry``). Training here quantises the
same way: latents and codes are normalised, the nearest code by cosine is chosen, and a straight-through
estimator passes gradients to the encoder. At the end the codebook is stored normalised, so the
encoder's Euclidean nearest-code search (``vqmodel.encode``) picks exactly the code that decoding uses.

Run: ``python -m gotr1.demo.vq_train --out gotr1/assets/demo_vq.safetensors`` (regenerates :data:`DEMO_VQ`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from gotr1.policy.model import janus_parts
from gotr1.progress import progress_bar
from gotr1.train.image_tokens import image_to_pixels

DEMO_VQ = Path(__file__).parents[1] / "assets" / "demo_vq.safetensors"


def _quantize(vq, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised latents ``[B, C, h, w]`` -> (their nearest normalised codes, straight-through), commitment loss."""
    z = F.normalize(z, dim=1)
    codes = F.normalize(vq.quantize.embedding.weight, dim=1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    quant = codes[(flat @ codes.t()).argmax(1)].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    commit = F.mse_loss(quant, z.detach()) + 0.25 * F.mse_loss(z, quant.detach())
    return z + (quant - z).detach(), commit


def _reinitialize(vq) -> None:
    """PyTorch's default initialisation, with every residual branch and attention output starting at zero.

    The random presets' wide initialisation (std 0.2, chosen to spread the language model's logits) starts
    the autoencoder with outputs in the hundreds; zeroed residual branches make the deep autoencoder start
    as a shallow one, which trains several times faster.
    """
    for name, module in vq.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm)):
            module.reset_parameters()
            if name.endswith(("conv2", "proj_out")):
                torch.nn.init.zeros_(module.weight)
                torch.nn.init.zeros_(module.bias)


def train_vq(model, images, steps: int = 300, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
             progress: bool = True, reinitialize: bool = True) -> list[float]:
    """Train ``model``'s VQ encoder, codebook and decoder to reconstruct ``images``; returns the losses.

    Parameters
    ----------
    model : JanusForConditionalGeneration or a PEFT wrapper of one
    images : list of PIL.Image
        Training pictures, resized to the model's image size.
    steps, batch_size, lr, seed :
        Adam steps, images per step, peak learning rate (cosine decay to 0), batch sampling seed.
    reinitialize : bool
        Start from a fresh initialisation (see :func:`_reinitialize`) rather than the current weights.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    with torch.random.fork_rng(devices=[]):  # the result depends on ``seed`` alone, not on torch's global stream
        torch.manual_seed(seed)
        return _train(model, images, steps, batch_size, lr, seed, progress, reinitialize)


def _train(model, images, steps, batch_size, lr, seed, progress, reinitialize) -> list[float]:
    vq = janus_parts(model).model.vqmodel
    size = janus_parts(model).config.vision_config.image_size
    pixels = torch.stack([image_to_pixels(im, size) for im in images]).to(vq.quant_conv.weight.device)
    rng = np.random.default_rng(seed)
    params = list(vq.parameters())
    was_training, flags = vq.training, [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    if reinitialize:
        _reinitialize(vq)
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    vq.train()
    with torch.no_grad():  # codes start on encoder outputs, so none is dead from the first step
        z = vq.quant_conv(vq.encoder(pixels[: min(len(pixels), 64)])).permute(0, 2, 3, 1).reshape(-1, vq.quantize.embedding_dim)
        codes = vq.quantize.embedding.weight
        codes.copy_(z[torch.as_tensor(rng.integers(0, len(z), codes.shape[0]))] + 0.01 * torch.randn_like(codes))
    losses = []
    bar = progress_bar(range(steps), desc="vq", enabled=progress)
    for _ in bar:
        batch = pixels[torch.as_tensor(rng.integers(0, len(pixels), batch_size))]
        quant, commit = _quantize(vq, vq.quant_conv(vq.encoder(batch)))
        recon = vq.decoder(vq.post_quant_conv(quant))
        loss = F.mse_loss(recon, batch) + commit
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=1))
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
    vq.train(was_training)
    return losses


@torch.no_grad()
def reconstruct(model, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The VQ round trip of ``images``: (image tokens int64 ``[N, tokens]``, decoded uint8 ``[N, S, S, 3]``)."""
    from gotr1.rollout.images import decode_images

    janus = janus_parts(model)
    vq, size = janus.model.vqmodel, janus.config.vision_config.image_size
    pixels = torch.stack([image_to_pixels(im, size) for im in images]).to(vq.quant_conv.weight)
    tokens = vq.encode(pixels).image_tokens.view(len(images), -1)
    return tokens, decode_images(model, tokens)


def reconstruction_mse(originals, decoded: torch.Tensor) -> float:
    """Mean squared error on the [-1, 1] pixel scale between PIL ``originals`` and uint8 ``decoded`` [N, S, S, 3]."""
    size = decoded.shape[1]
    target = torch.stack([image_to_pixels(im, size) for im in originals]).permute(0, 2, 3, 1)
    return float(((decoded.float() / 127.5 - 1.0) - target).pow(2).mean())


def mean_picture_mse(pictures) -> float:
    """The error of reconstructing every picture as the mean picture: what a VQ that keeps nothing scores."""
    pixels = np.stack([np.asarray(p.convert("RGB"), dtype=np.float64) for p in pictures]) / 127.5 - 1.0
    return float(np.square(pixels - pixels.mean(0)).mean())


# ---------------------------------------------------------------------------------------------
# The shipped tokenizer
# ---------------------------------------------------------------------------------------------


# The VQ configuration fields that shape its weights (the projection sizes belong to the language model's side).
_ARCHITECTURE = ("embed_dim", "num_embeddings", "double_latent", "latent_channels", "in_channels", "out_channels",
                 "base_channels", "channel_multiplier", "num_res_blocks")


def _vq_config_json(model) -> str:
    janus = janus_parts(model)
    config = janus.config.vq_config.to_dict()
    return json.dumps({**{k: config[k] for k in _ARCHITECTURE}, "image_size": janus.config.vision_config.image_size})


def save_vq(model, path: str | Path, **metadata: str) -> Path:
    """Write ``model``'s VQ weights (safetensors) with its config, so :func:`load_vq` can check a match."""
    vq = janus_parts(model).model.vqmodel
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().float().cpu().contiguous() for name, t in vq.state_dict().items()}
    save_file(tensors, str(path), metadata={"vq_config": _vq_config_json(model), **metadata})
    return path


def load_vq(model, path: str | Path = DEMO_VQ) -> None:
    """Load VQ weights written by :func:`save_vq` into ``model``.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming ``path``: missing, or written for another VQ configuration / image size.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQ weights {path} do not exist (regenerate with `python -m gotr1.demo.vq_train --out {path}`)")
    with safe_open(str(path), "pt") as f:
        saved = (f.metadata() or {}).get("vq_config")
    if saved != _vq_config_json(model):
        raise ValueError(f"VQ weights {path} were trained for another VQ configuration or image size: {saved}")
    vq = janus_parts(model).model.vqmodel
    weight = vq.quant_conv.weight
    vq.load_state_dict({k: v.to(device=weight.device, dtype=weight.dtype) for k, v in load_file(str(path)).items()})


def main(argv: list[str] | None = None) -> int:
    """Train the demo's VQ tokenizer on its synthetic pictures and write it (see :data:`DEMO_VQ`)."""
    from gotr1.demo.synthetic import DEMO_GRID, DEMO_IMAGE_SIZE, draw_sample, synthetic_samples
    from gotr1.policy.model import tiny_janus

    parser = argparse.ArgumentParser(prog="python -m gotr1.demo.vq_train", description=main.__doc__)
    parser.add_argument("--out", default=str(DEMO_VQ))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--pictures", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, _ = tiny_janus(seed=args.seed, image_size=DEMO_IMAGE_SIZE)
    draw = lambda count, seed: [draw_sample(s, DEMO_IMAGE_SIZE) for s in synthetic_samples(count, seed=seed, grid=DEMO_GRID)]
    pictures = draw(args.pictures, args.seed)
    losses = train_vq(model, pictures, steps=args.steps, seed=args.seed)
    held_out = draw(256, args.seed + 99_991)
    mse = reconstruction_mse(held_out, reconstruct(model, held_out)[1])
    save_vq(model, args.out, steps=str(args.steps), pictures=str(args.pictures), held_out_mse=f"{mse:.4f}")
    print(f"wrote {args.out}: final loss {np.mean(losses[-20:]):.4f}, held-out reconstruction MSE {mse:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
