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
# The demo's world: 64-px pictures whose boxes snap to the 4x4 grid of 16-px image tokens (see gotr1.demo.run).
DEMO_IMAGE_SIZE = 64
DEMO_GRID = DEMO_IMAGE_SIZE // 16
NUMBERS = {2: "two", 3: "three"}

# Where a prompt puts its objects: a relation's side for the first object, or a row of columns.
SIDES = ("left", "right", "top", "bottom", "next_to", "row")

# Relation phrase -> side of the canvas the first object takes (the second object takes the other).
RELATIONS = {
    "on the left of": "left",
    "on the right of": "right",
    "above": "top",
    "below": "bottom",
    "on top of": "top",
    "next to": "next_to",
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
    side: str = "row"
    """Where the prompt asks the objects to be (:data:`SIDES`): the first object's side of the second for a
    relation, ``row`` for counts and conjunctions. The chain's boxes may contradict it (``relation_noise``)."""


# ---------------------------------------------------------------------------------------------
# Layout placement
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where boxes may go: anywhere (corners kept off the edges), or on a grid of whole cells.

    A grid of ``cells`` per side lines boxes up with the image's token grid (``cells = image_size // 16``),
    so each object covers whole image tokens: a tiny VQ can show its colour, and a tiny policy can learn
    which tokens a box covers from the box's corners.
    """

    cells: int | None = None

    def __post_init__(self):
        if self.cells is not None and not 2 <= self.cells <= 100:
            raise ValueError(f"grid must be None or in [2, 100], got {self.cells}")

    @property
    def full(self) -> tuple[int, int]:
        return (0, 1000) if self.cells else (40, 960)

    def halves(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The first and second half of the canvas along one axis, with a gap between them when free."""
        return ((0, 500), (500, 1000)) if self.cells else ((40, 470), (530, 960))

    def box(self, rng: random.Random, x_range: tuple[int, int], y_range: tuple[int, int], min_side: int = 180) -> Box:
        """A random box inside the region (0-1000 scale), at least ``min_side`` (or one cell) wide and tall."""
        (x1, x2), (y1, y2) = self._span(rng, x_range, min_side), self._span(rng, y_range, min_side)
        return Box(x1, y1, x2, y2)

    def _span(self, rng: random.Random, bounds: tuple[int, int], min_side: int) -> tuple[int, int]:
        lo, hi = bounds
        if self.cells is None:
            side = rng.randint(min(min_side, hi - lo), hi - lo)
            start = rng.randint(lo, hi - side)
            return start, start + side
        first, last = -(-lo * self.cells // 1000), hi * self.cells // 1000  # whole cells inside [lo, hi]
        if last <= first:
            raise ValueError(f"region {bounds} holds no whole cell of a {self.cells}-cell grid")
        side = rng.randint(1, last - first)
        start = rng.randint(first, last - side)
        return self._corner(start), self._corner(start + side)

    def _corner(self, cell: int) -> int:
        return round(cell * 1000 / self.cells)

    def pair(self, rng: random.Random, side: str) -> tuple[Box, Box]:
        """Two boxes whose centres satisfy 'first is on ``side`` of second'."""
        first_half, second_half = self.halves()
        if side in ("left", "right"):
            a_x, b_x = (first_half, second_half) if side == "left" else (second_half, first_half)
            return self.box(rng, a_x, self.full), self.box(rng, b_x, self.full)
        a_y, b_y = (first_half, second_half) if side == "top" else (second_half, first_half)
        a = self.box(rng, self.full, a_y)
        b = self.box(rng, (a.x1, a.x2), b_y)  # under or over the first, so "on top of" holds too
        return a, b

    def adjacent(self, rng: random.Random) -> tuple[Box, Box]:
        """Two boxes side by side on shared rows, the first on the left, touching (grid) or 30 apart (free)."""
        gap = 0 if self.cells else 30
        lo, hi = self.full
        (y1, y2) = self._span(rng, self.full, 180)
        if self.cells:
            middle = self._corner(rng.randint(1, self.cells - 1))
        else:
            middle = rng.randint(lo + 180 + gap, hi - 180 - gap)
        (a1, _), (_, b2) = self._span(rng, (lo, middle - gap // 2), 180), self._span(rng, (middle + gap // 2, hi), 180)
        return Box(a1, y1, middle - gap // 2, y2), Box(middle + gap // 2, y1, b2, y2)

    def follows(self, side: str, boxes: list[Box]) -> bool:
        """Whether ``boxes`` sit where this placement puts objects asked to be on ``side`` (:data:`SIDES`):
        the inverse of :meth:`pair`, :meth:`adjacent` and :meth:`row`, on the grid's corners when it has one.

        A held-out check of a policy's layouts that no reward computes: it holds only for boxes the data
        could contain, so a layout that wins a relation by stretching or stacking boxes fails it.
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if not boxes or any(b.x1 == b.x2 or b.y1 == b.y2 for b in boxes):
            return False
        if self.cells and any(c not in self._corners for b in boxes for c in b.as_tuple()):
            return False
        if side == "row":
            spans = sorted((b.x1, b.x2) for b in boxes)
            return all(right[0] >= left[1] for left, right in zip(spans, spans[1:]))
        if len(boxes) != 2:
            return False
        a, b = boxes
        (lo1, hi1), (lo2, hi2) = self.halves()
        within = lambda lo, hi, start, end: lo <= start and end <= hi  # noqa: E731
        if side == "next_to":
            return (a.y1, a.y2) == (b.y1, b.y2) and b.x1 - a.x2 == (0 if self.cells else 30)
        if side in ("left", "right"):
            first, second = ((lo1, hi1), (lo2, hi2)) if side == "left" else ((lo2, hi2), (lo1, hi1))
            return within(*first, a.x1, a.x2) and within(*second, b.x1, b.x2)
        first, second = ((lo1, hi1), (lo2, hi2)) if side == "top" else ((lo2, hi2), (lo1, hi1))
        return within(*first, a.y1, a.y2) and within(*second, b.y1, b.y2) and within(a.x1, a.x2, b.x1, b.x2)

    @property
    def _corners(self) -> frozenset[int]:
        return frozenset(self._corner(cell) for cell in range(self.cells + 1))

    def row(self, rng: random.Random, count: int) -> list[Box]:
        """``count`` boxes in side-by-side columns (for counts and plain conjunctions)."""
        if self.cells is None:
            step = 920 // count
            return [self.box(rng, (40 + i * step, 40 + (i + 1) * step - 20), (40, 960), min_side=min(160, step - 40))
                    for i in range(count)]
        if count > self.cells:
            raise ValueError(f"{count} objects do not fit side by side on a {self.cells}-cell grid")
        widths = [self.cells // count + (i < self.cells % count) for i in range(count)]
        rng.shuffle(widths)
        edges = [sum(widths[:i]) for i in range(count + 1)]
        return [self.box(rng, (self._corner(a), self._corner(b)), self.full) for a, b in zip(edges, edges[1:])]


# ---------------------------------------------------------------------------------------------
# Prompt families
# ---------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# The side each relation's placement puts the first object on when the chain contradicts the prompt.
_CONTRADICTIONS = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "next_to": "top"}


def _spatial_sample(rng: random.Random, place: Placement, relation_noise: float) -> SyntheticSample:
    (c1, c2), (s1, s2) = rng.sample(sorted(COLORS), 2), (rng.choice(SHAPES), rng.choice(SHAPES))
    relation = rng.choice(sorted(RELATIONS))
    n1, n2 = f"{c1} {s1}", f"{c2} {s2}"
    prompt = f"{_article(c1)} {n1} {relation} {_article(c2)} {n2}"
    b1, b2 = _relation_boxes(rng, place, RELATIONS[relation], relation_noise)
    return _sample(prompt, [(n1, b1, c1, s1), (n2, b2, c2, s2)], side=RELATIONS[relation])


def _relation_boxes(rng: random.Random, place: Placement, side: str, relation_noise: float) -> tuple[Box, Box]:
    """Boxes for 'first is on ``side`` of second'; with probability ``relation_noise`` they contradict it."""
    if relation_noise and rng.random() < relation_noise:
        side = _CONTRADICTIONS[side]
    return place.adjacent(rng) if side == "next_to" else place.pair(rng, side)


def _count_sample(rng: random.Random, place: Placement, relation_noise: float) -> SyntheticSample:
    count, color, shape = rng.choice(sorted(NUMBERS)), rng.choice(sorted(COLORS)), rng.choice(SHAPES)
    prompt = f"{NUMBERS[count]} {color} {shape}s"
    name = f"{color} {shape}"
    return _sample(prompt, [(name, box, color, shape) for box in place.row(rng, count)], tag_in_text=False)


def _conjunction_sample(rng: random.Random, place: Placement, relation_noise: float) -> SyntheticSample:
    (c1, c2), (s1, s2) = rng.sample(sorted(COLORS), 2), rng.sample(SHAPES, 2)
    n1, n2 = f"{c1} {s1}", f"{c2} {s2}"
    prompt = f"{_article(c1)} {n1} and {_article(c2)} {n2}"
    b1, b2 = place.row(rng, 2)
    return _sample(prompt, [(n1, b1, c1, s1), (n2, b2, c2, s2)])


def _sample(prompt: str, parts: list[tuple[str, Box, str, str]], tag_in_text: bool = True,
            side: str = "row") -> SyntheticSample:
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
        side=side,
    )


_COMPBENCH_PATTERN = re.compile(
    r"^an? ((?:(\w+) )?(\w+)) (" + "|".join(map(re.escape, _COMPBENCH_RELATIONS)) + r"|and) an? ((?:(\w+) )?(\w+))$"
)


def compbench_sample(prompt: str, rng: random.Random, place: Placement = Placement(),
                     relation_noise: float = 0.0) -> SyntheticSample | None:
    """A sample for a two-object T2I-CompBench prompt ("a red car and a green bench", "a cat on the left of
    a dog"), or None when the prompt is not of that drawable form. Uncoloured nouns get a random colour."""
    match = _COMPBENCH_PATTERN.match(prompt.strip().rstrip(".").lower())
    if match is None:
        return None
    n1, adj1, noun1, relation, n2, adj2, noun2 = match.groups()
    if any(adj is not None and adj not in COLORS for adj in (adj1, adj2)):
        return None  # an attribute we cannot draw (gold, wooden, ...) would contradict the image
    colors = [adj1 if adj1 in COLORS else rng.choice(sorted(COLORS)), adj2 if adj2 in COLORS else rng.choice(sorted(COLORS))]
    side = "row" if relation == "and" else RELATIONS[_COMPBENCH_RELATIONS[relation]]
    b1, b2 = place.row(rng, 2) if side == "row" else _relation_boxes(rng, place, side, relation_noise)
    shapes = [SHAPES[sum(map(ord, noun)) % len(SHAPES)] for noun in (noun1, noun2)]
    return _sample(prompt.strip().rstrip("."), [(n1, b1, colors[0], shapes[0]), (n2, b2, colors[1], shapes[1])],
                   side=side)


def synthetic_samples(num_samples: int, seed: int = 0, compbench_prompts: list[str] | None = None,
                      grid: int | None = None, relation_noise: float = 0.0) -> list[SyntheticSample]:
    """``num_samples`` samples: spatial, count and conjunction prompts, plus drawable T2I-CompBench prompts if given.

    Parameters
    ----------
    grid : int, optional
        Put boxes on a grid of this many cells per side (see :class:`Placement`); default anywhere.
    relation_noise : float
        Fraction of relation prompts whose chain (and picture) places the objects against the relation,
        as machine-annotated GoT data sometimes does: a model that imitates the data inherits the
        mistake, and a reward that checks relations has something to correct.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0.0 <= relation_noise <= 1.0:
        raise ValueError(f"relation_noise must be in [0, 1], got {relation_noise}")
    place = Placement(grid)
    rng = random.Random(seed)
    families = [_spatial_sample, _spatial_sample, _count_sample, _conjunction_sample]
    pool = list(compbench_prompts or [])
    out = []
    while len(out) < num_samples:
        prompt = pool.pop(rng.randrange(len(pool))) if pool and rng.random() < 0.5 else None
        sample = compbench_sample(prompt, rng, place, relation_noise) if prompt else None
        out.append(sample or rng.choice(families)(rng, place, relation_noise))
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
                            compbench_prompts: list[str] | None = None, grid: int | None = None,
                            relation_noise: float = 0.0) -> Path:
    """Write samples as a GoT JSONL file (``{"prompt", "chain", "image"}``, image paths relative) with PNGs.

    ``grid`` and ``relation_noise`` as in :func:`synthetic_samples`. Returns the path of ``data.jsonl``
    inside ``out_dir``.
    """
    return write_samples(out_dir, synthetic_samples(num_samples, seed, compbench_prompts, grid, relation_noise), image_size)


def write_samples(out_dir: str | Path, samples: list[SyntheticSample], image_size: int = 64) -> Path:
    """Write given samples as :func:`write_synthetic_dataset` does; returns the path of ``data.jsonl``."""
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    path = out_dir / "data.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, sample in enumerate(samples):
            image_name = f"images/{i:06d}.png"
            draw_sample(sample, image_size).save(out_dir / image_name)
            f.write(json.dumps({"prompt": sample.prompt, "chain": sample.chain, "image": image_name}) + "\n")
    return path
