"""Image tokenisation for SFT: pictures to VQ codebook indices, cached on disk.

Encoding an image through Janus' VQ encoder costs far more than a training step of a small model, and
an epoch sees every image again. Tokens are therefore cached as ``.npy`` files keyed by the image file's
content hash and a fingerprint of the VQ model (its config, the image size and a hash of its codebook and
quantisation weights, so two random-weight models with one config never share entries). Pixels go into
the encoder as ``x / 127.5 - 1`` at the model's image size: the inverse of
:func:`gotr1.rollout.generate.decode_images`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gotr1.policy.model import janus_parts


def vq_fingerprint(model) -> str:
    """A short hash identifying the VQ tokenizer of ``model``: config, image size, codebook weights."""
    janus = janus_parts(model)
    vq = janus.model.vqmodel
    digest = hashlib.sha256(json.dumps(janus.config.vq_config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(str(janus.config.vision_config.image_size).encode())
    for weight in (vq.quantize.embedding.weight, vq.quant_conv.weight):
        digest.update(weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def image_to_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """float32 ``[3, size, size]`` in [-1, 1]: the VQ encoder's input for one RGB picture."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


class ImageTokenCache:
    """Encode image files to codebook indices, computing each (image, VQ model) pair once.

    Parameters
    ----------
    model : JanusForConditionalGeneration or a PEFT wrapper of one
    cache_dir : str or Path
        Where the ``.npy`` entries live (``cache_dir/<vq fingerprint>/<image sha256>.npy``).
    batch_size : int
        Images encoded per VQ forward pass.
    """

    def __init__(self, model, cache_dir: str | Path, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.janus = janus_parts(model)
        self.dir = Path(cache_dir) / vq_fingerprint(model)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.image_size = self.janus.config.vision_config.image_size
        self.hits = 0
        self.misses = 0

    def _entry(self, path: Path) -> Path:
        return self.dir / f"{hashlib.sha256(path.read_bytes()).hexdigest()}.npy"

    @torch.no_grad()
    def _encode(self, paths: list[Path]) -> np.ndarray:
        vq = self.janus.model.vqmodel
        weight = vq.quant_conv.weight
        pixels = []
        for path in paths:
            with Image.open(path) as image:
                pixels.append(image_to_pixels(image, self.image_size))
        batch = torch.stack(pixels).to(device=weight.device, dtype=weight.dtype)
        tokens = vq.encode(batch).image_tokens
        return tokens.view(len(paths), -1).cpu().numpy().astype(np.int64)

    def encode(self, paths: list[str | Path]) -> torch.Tensor:
        """int64 ``[N, num_image_tokens]`` codebook indices of the image files, from the cache where present."""
        paths = [Path(p) for p in paths]
        entries = [self._entry(p) for p in paths]
        todo = [i for i, entry in enumerate(entries) if not entry.is_file()]
        self.hits += len(paths) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for i, tokens in zip(chunk, self._encode([paths[i] for i in chunk])):
                self._store(entries[i], tokens)
        return torch.from_numpy(np.stack([self._load(entry, path) for entry, path in zip(entries, paths)]))

    def _load(self, entry: Path, path: Path) -> np.ndarray:
        """A cache entry; a damaged one (a killed writer, a bad disk) is encoded again, with a warning."""
        try:
            tokens = np.load(entry)
            if tokens.shape == (self.janus.config.vision_config.num_image_tokens,) and tokens.dtype == np.int64:
                return tokens
            problem = f"shape {tokens.shape}, dtype {tokens.dtype}"
        except (OSError, ValueError, EOFError) as err:
            problem = f"{type(err).__name__}: {err}"
        warnings.warn(f"image token cache entry {entry} for {path} is damaged ({problem}); encoding it again", stacklevel=3)
        tokens = self._encode([path])[0]
        self._store(entry, tokens)
        return tokens

    @staticmethod
    def _store(entry: Path, tokens: np.ndarray) -> None:
        tmp = entry.with_name(f"{entry.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, tokens)
        os.replace(tmp, entry)  # concurrent writers of one entry write the same tokens
