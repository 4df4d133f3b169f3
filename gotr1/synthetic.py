"""Synthetic GoT data: compositional prompts, ground-truth chains and images drawn to match.

Used by the tests and the embedded demo, where no real GoT data set can be downloaded. Each sample is a
prompt built from colours, shapes, counts and spatial relations (a fixed vocabulary, optionally mixed with
T2I-CompBench prompts whose colours and relations can be drawn), its chain in the GoT format with boxes
placed to satisfy the prompt, and an image with each object drawn as a filled shape of its colour inside
its box. The images are simple on purpose: a tiny model can learn them, and rule rewards can check them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from gotr1.chain import Box, ChainObject, format_chain

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "black": (25, 25, 25),
    "white": (250, 250, 250),
    "brown": (130, 80, 40),
    "pink": (245, 150, 190),
    "gray": (128, 128, 128),
}
SHAPES = ("square", "circle", "triangle")
BACKGROUND = (200, 200, 200)
NUMBERS = {2: "two", 3: "three"}

# Relation phrase -> side of the canvas the first object takes (the second object takes the other).
RELATIONS = {
    "on the left of": "left",
    "on the right of": "right",
    "above": "top",
    "below": "bottom",
    "on top of": "top",
    "next to": "left",
}
_COMPBENCH_RELATIONS = {
    "on the left of": "on the left of",
    "on the right of": "on the right of",
    "on the top of": "on top of",
    "on the bottom of": "below",
    "next to": "next to",
    "near": "next to",
    "on side of": "next to",
}


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic example: what the user asks, the chain that answers it, and the matching picture."""

    prompt: str
    chain: str
    objects: tuple[ChainObject, ...]
    colors: tuple[tuple[int, int, int], ...]
    shapes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Layout placement
# ---------------------------------------------------------------------------------------------


def _box_in(rng: random.Random, x_range: tuple[int, int], y_range: tuple[int, int], min_side: int = 180) -> Box:
    """A random box inside the region, at least ``min_side`` wide and tall (on the 0-1000 scale)."""
    (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range
    w = rng.randint(min(min_side, x_hi - x_lo), x_hi - x_lo)
    h = rng.randint(min(min_side, y_hi - y_lo), y_hi - y_lo)
    x1 = rng.randint(x_lo, x_hi - w)
    y1 = rng.randint(y_lo, y_hi - h)
    return Box(x1, y1, x1 + w, y1 + h)


def _pair_boxes(rng: random.Random, side: str) -> tuple[Box, Box]:
    """Two boxes whose centres satisfy 'first is on ``side`` of second', separated by a margin."""
    full, first_half, second_half = (40, 960), (40, 470), (530, 960)
    if side in ("left", "right"):
        a_x, b_x = (first_half, second_half) if side == "left" else (second_half, first_half)
        return _box_in(rng, a_x, full), _box_in(rng, b_x, full)
    a_y, b_y = (first_half, second_half) if side == "top" else (second_half, first_half)
    return _box_in(rng, full, a_y), _box_in(rng, full, b_y)


def _row_boxes(rng: random.Random, count: int) -> list[Box]:
    """``count`` boxes in side-by-side columns (for counts and plain conjunctions)."""
    step = 920 // count
    return [_box_in(rng, (40 + i * step, 40 + (i + 1) * step - 20), (40, 960), min_side=min(160, step - 40)) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Prompt families
# ---------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _spatial_sample(rng: random.Random) -> SyntheticSample:
    (c1, c2), (s1, s2) = rng.sample(sorted(COLORS), 2), (rng.choice(SHAPES), rng.choice(SHAPES))
    relation = rng.choice(sorted(RELATIONS))
    n1, n2 = f"{c1} {s1}", f"{c2} {s2}"
    prompt = f"{_article(c1)} {n1} {relation} {_article(c2)} {n2}"
    b1, b2 = _pair_boxes(rng, RELATIONS[relation])
    return _sample(prompt, [(n1, b1, c1, s1), (n2, b2, c2, s2)])


def _count_sample(rng: random.Random) -> SyntheticSample:
    count, color, shape = rng.choice(sorted(NUMBERS)), rng.choice(sorted(COLORS)), rng.choice(SHAPES)
    prompt = f"{NUMBERS[count]} {color} {shape}s"
    name = f"{color} {shape}"
    return _sample(prompt, [(name, box, color, shape) for box in _row_boxes(rng, count)], tag_in_text=False)


def _conjunction_sample(rng: random.Random) -> SyntheticSample:
    (c1, c2), (s1, s2) = rng.sample(sorted(COLORS), 2), rng.sample(SHAPES, 2)
    n1, n2 = f"{c1} {s1}", f"{c2} {s2}"
    prompt = f"{_article(c1)} {n1} and {_article(c2)} {n2}"
    b1, b2 = _row_boxes(rng, 2)
    return _sample(prompt, [(n1, b1, c1, s1), (n2, b2, c2, s2)])


def _sample(prompt: str, parts: list[tuple[str, Box, str, str]], tag_in_text: bool = True) -> SyntheticSample:
    objects = [ChainObject(name, box) for name, box, _, _ in parts]
    if tag_in_text:
        chain = format_chain(objects, text=prompt[0].upper() + prompt[1:] + ".")
    else:
        chain = f"{prompt[0].upper() + prompt[1:]}: " + format_chain(objects) + "."
    return SyntheticSample(
        prompt=prompt,
        chain=chain,
        objects=tuple(objects),
        colors=tuple(COLORS.get(color, COLORS["gray"]) for _, _, color, _ in parts),
        shapes=tuple(shape for _, _, _, shape in parts),
    )


_COMPBENCH_PATTERN = re.compile(
    r"^an? ((?:(\w+) )?(\w+)) (" + "|".join(map(re.escape, _COMPBENCH_RELATIONS)) + r"|and) an? ((?:(\w+) )?(\w+))$"
)


def compbench_sample(prompt: str, rng: random.Random) -> SyntheticSample | None:
    """A sample for a two-object T2I-CompBench prompt ("a red car and a green bench", "a cat on the left of
    a dog"), or None when the prompt is not of that drawable form. Uncoloured nouns get a random colour."""
    match = _COMPBENCH_PATTERN.match(prompt.strip().rstrip(".").lower())
    if match is None:
        return None
    n1, adj1, noun1, relation, n2, adj2, noun2 = match.groups()
    if any(adj is not None and adj not in COLORS for adj in (adj1, adj2)):
        return None  # an attribute we cannot draw (gold, wooden, ...) would contradict the image
    colors = [adj1 if adj1 in COLORS else rng.choice(sorted(COLORS)), adj2 if adj2 in COLORS else rng.choice(sorted(COLORS))]
    if relation == "and":
        b1, b2 = _row_boxes(rng, 2)
    else:
        b1, b2 = _pair_boxes(rng, RELATIONS[_COMPBENCH_RELATIONS[relation]])
    shapes = [SHAPES[sum(map(ord, noun)) % len(SHAPES)] for noun in (noun1, noun2)]
    return _sample(prompt.strip().rstrip("."), [(n1, b1, colors[0], shapes[0]), (n2, b2, colors[1], shapes[1])])


def synthetic_samples(num_samples: int, seed: int = 0, compbench_prompts: list[str] | None = None) -> list[SyntheticSample]:
    """``num_samples`` samples: spatial, count and conjunction prompts, plus drawable T2I-CompBench prompts if given."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = random.Random(seed)
    families = [_spatial_sample, _spatial_sample, _count_sample, _conjunction_sample]
    pool = list(compbench_prompts or [])
    out = []
    while len(out) < num_samples:
        sample = compbench_sample(pool.pop(rng.randrange(len(pool))), rng) if pool and rng.random() < 0.5 else None
        out.append(sample or rng.choice(families)(rng))
    return out


# ---------------------------------------------------------------------------------------------
# Images and files
# ---------------------------------------------------------------------------------------------


def draw_sample(sample: SyntheticSample, size: int) -> Image.Image:
    """The sample's picture: each object a filled shape of its colour inside its box, on a gray background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj, color, shape in zip(sample.objects, sample.colors, sample.shapes):
        x1, y1, x2, y2 = obj.box.to_pixels(size, size)
        corners = [x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)]
        if shape == "circle":
            draw.ellipse(corners, fill=color)
        elif shape == "triangle":
            draw.polygon([(corners[0], corners[3]), (corners[2], corners[3]), ((corners[0] + corners[2]) / 2, corners[1])], fill=color)
        else:
            draw.rectangle(corners, fill=color)
    return image


def read_compbench_prompts(paths: list[str | Path]) -> list[str]:
    """Non-empty lines of T2I-CompBench prompt files."""
    prompts = []
    for path in paths:
        prompts += [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts


def write_synthetic_dataset(out_dir: str | Path, num_samples: int, image_size: int = 64, seed: int = 0,
                            compbench_prompts: list[str] | None = None) -> Path:
    """Write samples as a GoT JSONL file (``{"prompt", "chain", "image"}``, image paths relative) with PNGs.

    Returns the path of ``data.jsonl`` inside ``out_dir``.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    path = out_dir / "data.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, sample in enumerate(synthetic_samples(num_samples, seed, compbench_prompts)):
            image_name = f"images/{i:06d}.png"
            draw_sample(sample, image_size).save(out_dir / image_name)
            f.write(json.dumps({"prompt": sample.prompt, "chain": sample.chain, "image": image_name}) + "\n")
    return path

