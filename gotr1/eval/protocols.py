"""Each benchmark's protocol: its prompts, images per prompt, the file layout its official scripts read,
its metrics and its table.

* ``t2i-compbench``: the validation lists (shipped, in the revision GoT-R1 evaluated unless another is asked for),
  10 images per prompt, ``{category}/samples/{prompt}_{n:06}.png`` (``n`` counts the category's images), one
  metric per category (:mod:`gotr1.metrics.compbench`), the mean per category; the GoT-R1 paper's rows beside
  the run's only when spaCy's model parsed the prompts (else the rows are withheld, and the table says why).
* ``geneval``: the 553 prompts of GenEval's metadata (shipped), 4 images per prompt,
  ``{index:05}/samples/{k:04}.png`` beside ``{index:05}/metadata.jsonl``, correctness per image
  (:mod:`gotr1.metrics.geneval`), per-tag accuracy and their mean; the GoT-R1 paper's GenEval rows beside.
* ``judge``: the T2I-CompBench lists (or a prompt file) scored by the MLLM judge's prompt-image rubric (R_PI);
  comparable between gotr1 runs, not with any paper.

Every published row is checked against the GoT-R1 paper's tables (arXiv 2505.17022v2, the ICLR 2026 version;
the citation sits beside each row). :meth:`Protocol.compare` decides what a run's table says beside its
numbers: the published rows only where the run is comparable (never beside random-weight tiny metrics), why
they are withheld otherwise, notes on the cells that departed from the official pipeline, and the facts a
reader needs (which noun-phrase parser, which prompt revision, which checkpoints).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gotr1.prompt_sets import (
    COMPBENCH_CATEGORIES,
    COMPBENCH_REVISIONS,
    DEFAULT_COMPBENCH_REVISION,
    check_revision,
    read_prompts,
)

TINY_METRICS = "random-weight tiny metric models (--tiny-metrics): the numbers mean nothing"
SPACY_INSTALL = "pip install spacy && python -m spacy download en_core_web_sm"
DETECTOR_DIFFERS = "detector differs"


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a benchmark: its category, its index in the category's list, its text and metadata."""

    category: str
    index: int
    prompt: str
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a run: the prompt it answers, its number among that prompt's images, and its file."""

    item: PromptItem
    sample: int
    path: Path


@dataclass(frozen=True)
class Comparison:
    """What a run's table says beside its numbers (:meth:`Protocol.compare`).

    Attributes
    ----------
    paper_rows : dict
        Model -> column -> published value, the rows printed beside the run's (empty when withheld).
    withheld : str or None
        Why the published rows are not printed; None when they are (or the benchmark has none).
    cell_notes : dict
        Column -> a short note on the run's cell where the run departs from the official pipeline.
    facts : dict
        Label -> what ran (noun phrases, prompt lists, models), written into ``table.md``, ``table.csv`` and
        ``summary.json``.
    tiny_metrics : bool
        Whether the metrics were random-weight tiny models.
    """

    paper_rows: dict = field(default_factory=dict)
    withheld: str | None = None
    cell_notes: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    tiny_metrics: bool = False


class Protocol:
    """What differs between benchmarks; :mod:`gotr1.eval.runner` runs any of them."""

    name = ""
    images_per_prompt = 1
    categories: tuple[str, ...] = ()
    columns: dict[str, str] = {}
    paper_rows: dict[str, dict[str, float]] = {}
    paper_source = ""

    def items(self, categories: list[str], limit: int | None = None) -> list[PromptItem]:
        raise NotImplementedError

    def image_path(self, out: Path, item: PromptItem, sample: int, per_prompt: int) -> Path:
        raise NotImplementedError

    def prepare_folder(self, out: Path, item: PromptItem) -> None:
        """Write what the official layout keeps beside the images (nothing by default)."""

    def find_images(self, folder: Path) -> list[ImageRecord]:
        """The images of an existing folder in this benchmark's layout (``--images``)."""
        raise NotImplementedError

    def summary(self, records: list[dict]) -> dict[str, float]:
        """The table row: one value per column, from ``scores.jsonl`` records."""
        raise NotImplementedError

    def load_metrics(self, categories: list[str], device="cpu", dtype=None, tiny: bool = False,
                     blip_model: str | None = None) -> dict:
        """category -> metric, the benchmark's own models (``tiny``: random tiny ones, for offline smoke runs;
        ``blip_model``: a BLIP-VQA checkpoint, for the benchmarks that use one)."""
        raise NotImplementedError

    def score(self, metric, items: list[PromptItem], images: list) -> np.ndarray:
        """float64 ``[N]`` scores of ``images``, image ``i`` answering ``items[i]``."""
        return np.asarray(metric.score([item.prompt for item in items], images), dtype=np.float64)

    def check_categories(self, categories: list[str]) -> list[str]:
        unknown = [c for c in categories if c not in self.categories]
        if unknown or not categories:
            raise ValueError(f"categories: {unknown or categories} not in {self.name}'s {', '.join(self.categories)}")
        return categories

    def compare(self, metrics: dict, tiny_metrics: bool = False) -> Comparison:
        """What the table of a run scored by ``metrics`` (category -> metric) says beside its numbers."""
        withheld = TINY_METRICS if tiny_metrics else self.withheld(metrics)
        return Comparison({} if withheld else dict(self.paper_rows), withheld if self.paper_rows else None,
                          self.cell_notes(metrics), self.facts(metrics), tiny_metrics)

    def withheld(self, metrics: dict) -> str | None:
        """Why the published rows may not stand beside a run scored by ``metrics``; None when they may."""
        return None

    def cell_notes(self, metrics: dict) -> dict[str, str]:
        """Column -> note on the run's cell where ``metrics`` depart from the official pipeline."""
        return {}

    def facts(self, metrics: dict) -> dict[str, str]:
        """Label -> what ran, for the table and ``summary.json``."""
        return {}


def _category_means(records: list[dict], categories) -> dict[str, float]:
    means = {}
    for category in categories:
        values = [r["score"] for r in records if r["category"] == category and r["score"] is not None]
        values = [v for v in values if not math.isnan(v)]
        if any(r["category"] == category for r in records):
            means[category] = float(np.mean(values)) if values else float("nan")
    return means


class CompBench(Protocol):
    """T2I-CompBench (Huang et al., 2023): the official validation protocol, prompt lists of ``revision``."""

    name = "t2i-compbench"
    images_per_prompt = 10
    categories = COMPBENCH_CATEGORIES
    columns = {"color": "Color", "shape": "Shape", "texture": "Texture", "spatial": "2D-Spatial",
               "non_spatial": "Non-Spatial", "complex": "Complex"}
    paper_rows = {
        # GoT-R1, arXiv 2505.17022v2 (ICLR 2026), Table 1 (the same row is Table 3's full-reward GoT-R1-1B)
        "GoT-R1-1B": {"color": .7632, "shape": .5174, "texture": .6589, "spatial": .2674, "non_spatial": .3101,
                      "complex": .3749},
        # GoT-R1, arXiv 2505.17022v2 (ICLR 2026), Table 1
        "GoT-R1-7B": {"color": .8139, "shape": .5549, "texture": .7339, "spatial": .3306, "non_spatial": .3169,
                      "complex": .3944},
        # GoT-R1, arXiv 2505.17022v2 (ICLR 2026), Table 1 (as reported there for the base model)
        "Janus-Pro-7B": {"color": .6359, "shape": .3528, "texture": .4936, "spatial": .2061, "non_spatial": .3085,
                         "complex": .3559},
    }
    paper_source = "GoT-R1 (arXiv 2505.17022v2, ICLR 2026), Table 1, guidance scale 5, prompt lists 2023-07"
    PAPER_REVISION = "2023-07"
    """The prompt-list revision the paper's rows were measured on (GoT-R1 predates the 2025-09 revision)."""
    NOUN_COLUMNS = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
    """Columns whose metric parses the prompt with spaCy officially (all six: BLIP-VQA's noun phrases,
    2D-spatial's nouns, Complex's adjective-free CLIP text; Non-Spatial only through Complex)."""

    def __init__(self, revision: str = DEFAULT_COMPBENCH_REVISION):
        self.revision = check_revision(revision)

    def items(self, categories, limit=None):
        prompts = read_prompts(",".join(self.check_categories(categories)), self.revision)
        return [PromptItem(category, i, prompt) for category, lines in prompts.items()
                for i, prompt in enumerate(lines[:limit] if limit else lines)]

    def image_path(self, out, item, sample, per_prompt):
        return out / item.category / "samples" / f"{item.prompt}_{item.index * per_prompt + sample:06}.png"

    def find_images(self, folder):
        records = []
        for samples in sorted(folder.glob("*/samples")):
            for number, path in enumerate(sorted(samples.glob("*.png"))):
                prompt = path.stem.rsplit("_", 1)[0]  # the official scripts read the prompt from the name
                records.append(ImageRecord(PromptItem(samples.parent.name, number, prompt), 0, path))
        return records

    def summary(self, records):
        return _category_means(records, self.categories)

    def load_metrics(self, categories, device="cpu", dtype=None, tiny=False, blip_model=None):
        from gotr1.metrics.compbench import load_metrics

        return load_metrics(categories, device=device, dtype=dtype, tiny=tiny, blip_model=blip_model)

    def withheld(self, metrics):
        from gotr1.metrics.nouns import chunker

        if chunker() != "spacy" and any(c in self.NOUN_COLUMNS for c in metrics):
            return ("the prompts were parsed by gotr1's rule chunker, not spaCy's en_core_web_sm as officially, so "
                    "BLIP-VQA asks other questions, 2D-spatial looks for other nouns and Complex's CLIP reads other "
                    f"text; install the model ({SPACY_INSTALL}) for a table comparable with the paper's")
        return None

    def cell_notes(self, metrics):
        notes = {c: DETECTOR_DIFFERS for c in ("spatial", "complex") if c in metrics}  # OWLv2 stands in for UniDet
        if self.revision != self.PAPER_REVISION and "color" in metrics:
            notes["color"] = f"prompt list {self.revision}"
        return notes

    def facts(self, metrics):
        from gotr1.metrics.nouns import chunker

        facts = {"prompt lists": f"T2I-CompBench {self.revision}: {COMPBENCH_REVISIONS[self.revision]}",
                 "noun phrases": ("spaCy en_core_web_sm (official)" if chunker() == "spacy" else
                                  f"gotr1's rule chunker, not spaCy's en_core_web_sm ({SPACY_INSTALL})")}
        for column in ("color", "spatial"):
            if column in metrics:
                facts[metrics[column].name] = metrics[column].describe()
        if "spatial" in metrics or "complex" in metrics:
            facts["detector"] = (f"{DETECTOR_DIFFERS}: OWLv2 asked for UniDet's labels stands in for UniDet "
                                 "(Detectron2), whose confidences run on another scale")
        return facts


class Judge(CompBench):
    """The MLLM judge's prompt-image rubric over the T2I-CompBench lists or a prompt file."""

    name = "judge"
    images_per_prompt = 1
    paper_rows = {}
    paper_source = ""

    def items(self, categories, limit=None):
        # a file (its stem is the category) or shipped categories
        prompts = read_prompts(",".join(categories), self.revision)
        return [PromptItem(category, i, prompt) for category, lines in prompts.items()
                for i, prompt in enumerate(lines[:limit] if limit else lines)]

    def check_categories(self, categories):
        return categories

    def summary(self, records):
        return _category_means(records, dict.fromkeys(r["category"] for r in records))

    def withheld(self, metrics):
        return None

    def cell_notes(self, metrics):
        return {}

    def facts(self, metrics):
        return {"prompt lists": f"T2I-CompBench {self.revision} (shipped lists; a prompt file as it is)"}


class GenEval(Protocol):
    """GenEval (Ghosh et al., 2023): 553 prompts with object metadata, 4 images each."""

    name = "geneval"
    images_per_prompt = 4
    categories = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    columns = {"single_object": "Single Obj.", "two_object": "Two Obj.", "counting": "Counting",
               "colors": "Colors", "position": "Position", "color_attr": "Color Attri.", "overall": "Overall"}
    paper_rows = {
        # GoT-R1, arXiv 2505.17022v2 (ICLR 2026), Table 2 (not in v1, which reports no GenEval)
        "GoT-R1-7B": {"single_object": .99, "two_object": .94, "counting": .50, "colors": .90, "position": .46,
                      "color_attr": .68, "overall": .75},
        # GoT-R1, arXiv 2505.17022v2 (ICLR 2026), Table 2: the GoT-finetuned base GoT-R1-7B starts from
        "Janus-Pro-7B-GoT": {"single_object": .99, "two_object": .69, "counting": .48, "colors": .85, "position": .43,
                             "color_attr": .43, "overall": .64},
    }
    paper_source = "GoT-R1 (arXiv 2505.17022v2, ICLR 2026), Table 2"

    def items(self, categories, limit=None):
        from gotr1.metrics.geneval import load_metadata

        wanted = set(self.check_categories(categories))
        taken: dict[str, int] = {}
        out = []
        for index, row in enumerate(load_metadata()):
            tag = row["tag"]
            if tag in wanted and (not limit or taken.get(tag, 0) < limit):
                taken[tag] = taken.get(tag, 0) + 1
                out.append(PromptItem(tag, index, row["prompt"], row))
        return out

    def image_path(self, out, item, sample, per_prompt):
        return out / f"{item.index:05}" / "samples" / f"{sample:04}.png"

    def facts(self, metrics):
        return {"detector": "Mask2Former Swin-S, transformers' port of the Detectron2 training (the official run "
                            "uses mmdet's checkpoint), input at the official 1333 x 800 scale"}

    def load_metrics(self, categories, device="cpu", dtype=None, tiny=False, blip_model=None):
        from gotr1.metrics.geneval import GenEvalScore, tiny_mask2former
        from gotr1.metrics.tiny_models import tiny_clip

        metric = (GenEvalScore(*tiny_mask2former(), *tiny_clip()) if tiny
                  else GenEvalScore.from_pretrained(device=device, dtype=dtype))
        return {category: metric for category in categories}

    def score(self, metric, items, images):
        metadata = [item.metadata for item in items]
        return np.asarray(metric.score([item.prompt for item in items], images, metadata=metadata), dtype=np.float64)

    def prepare_folder(self, out, item):
        folder = out / f"{item.index:05}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(item.metadata) + "\n", encoding="utf-8")

    def find_images(self, folder):
        records = []
        for prompt_folder in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
            meta_file = prompt_folder / "metadata.jsonl"
            if not meta_file.is_file():
                continue
            metadata = json.loads(meta_file.read_text(encoding="utf-8").splitlines()[0])
            item = PromptItem(metadata["tag"], int(prompt_folder.name), metadata["prompt"], metadata)
            for sample, path in enumerate(sorted((prompt_folder / "samples").glob("*.png"))):
                records.append(ImageRecord(item, sample, path))
        return records

    def summary(self, records):
        from gotr1.metrics.geneval import summarize

        scored = [r for r in records if r["score"] is not None and not math.isnan(r["score"])]
        result = summarize([r["category"] for r in scored], [r["score"] for r in scored])
        return {key: float(value) for key, value in result.items() if key in self.columns}


PROTOCOLS = {p.name: p for p in (CompBench, GenEval, Judge)}


def protocol(name: str, revision: str | None = None) -> Protocol:
    """A fresh protocol object by benchmark name; ``revision``: the T2I-CompBench prompt lists' (default: the
    paper's), for the benchmarks that read them."""
    if name not in PROTOCOLS:
        raise ValueError(f"benchmark: {name!r} is not one of {', '.join(PROTOCOLS)}")
    if revision is None:
        return PROTOCOLS[name]()
    if not issubclass(PROTOCOLS[name], CompBench):
        raise ValueError(f"prompt revision: {name} has no T2I-CompBench prompt lists, got {revision!r}")
    return PROTOCOLS[name](revision)
