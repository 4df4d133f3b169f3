"""Brief training of a random-weight VQ tokenizer, so a tiny policy's images mean something.

A random VQ decoder turns any token grid into noise, and image rewards on noise teach nothing. The
embedded demo therefore trains the tiny model's VQ autoencoder for a few hundred steps on the synthetic
images first. Real checkpoints never need this: Janus-Pro ships a trained VQ model.

Janus decodes with L2-normalised codebook entries (``get_codebook_entry``). Training here quantises the
same way: latents and codes are normalised, the nearest code by cosine is chosen, and a straight-through
estimator passes gradients to the encoder. At the end the codebook is stored normalised, so the
encoder's Euclidean nearest-code search (``vqmodel.encode``) picks exactly the code that decoding uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gotr1.image_tokens import image_to_pixels
from gotr1.model import janus_parts


def _quantize(vq, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised latents ``[B, C, h, w]`` -> (their nearest normalised codes, straight-through), commitment loss."""
    z = F.normalize(z, dim=1)
    codes = F.normalize(vq.quantize.embedding.weight, dim=1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    quant = codes[(flat @ codes.t()).argmax(1)].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    commit = F.mse_loss(quant, z.detach()) + 0.25 * F.mse_loss(z, quant.detach())
    return z + (quant - z).detach(), commit


def train_vq(model, images, steps: int = 300, batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
             progress: bool = True) -> list[float]:
    """Train ``model``'s VQ encoder, codebook and decoder to reconstruct ``images``; returns the losses.

    Parameters
    ----------
    model : JanusForConditionalGeneration or a PEFT wrapper of one
    images : list of PIL.Image
        Training pictures, resized to the model's image size.
    steps, batch_size, lr, seed :
        Adam steps, images per step, learning rate, batch sampling seed.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    vq = janus_parts(model).model.vqmodel
    size = janus_parts(model).config.vision_config.image_size
    pixels = torch.stack([image_to_pixels(im, size) for im in images]).to(vq.quant_conv.weight.device)
    rng = np.random.default_rng(seed)
    params = [p for name, p in vq.named_parameters()]
    was_training, flags = vq.training, [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    vq.train()
    with torch.no_grad():  # codes start on encoder outputs, so none is dead from the first step
        z = vq.quant_conv(vq.encoder(pixels[: min(len(pixels), 64)])).permute(0, 2, 3, 1).reshape(-1, vq.quantize.embedding_dim)
        codes = vq.quantize.embedding.weight
        codes.copy_(z[torch.as_tensor(rng.integers(0, len(z), codes.shape[0]))] + 0.01 * torch.randn_like(codes))
    losses = []
    for _ in tqdm(range(steps), desc="vq", disable=not progress, dynamic_ncols=True):
        batch = pixels[torch.as_tensor(rng.integers(0, len(pixels), batch_size))]
        quant, commit = _quantize(vq, vq.quant_conv(vq.encoder(batch)))
        recon = vq.decoder(vq.post_quant_conv(quant))
        loss = F.mse_loss(recon, batch) + commit
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=1))
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
    vq.train(was_training)
    return losses
