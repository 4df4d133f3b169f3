"""GoT training data: JSONL rows ``{"prompt", "chain", "image"}`` validated up front, loaded lazily.

The data is one JSONL file, a folder of ``*.jsonl`` shards (as a converter writes ``shard-00000.jsonl``, ...)
or a glob; rows are ordered by shard path, then line. Opening the data streams once through every shard and
checks every row (valid JSON, the three fields as non-empty strings, a chain that parses strictly with at least
one object and no box of zero area, an image file that exists and whose header decodes), keeping only the byte
offset and line number of each good row (16 bytes), so the index of millions of rows stays small; prompts,
chains and pixels are read when a row is asked for. A bad row raises :class:`GoTDataError` naming the shard
and line, or with ``skip_invalid=True`` is skipped and counted in ``skipped`` so the run's log can report it.
Image paths are relative to the shard that names them.
"""

from __future__ import annotations

import bisect
import glob
import json
import logging
from array import array
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gotr1.chain import ChainFormatError, parse_chain

REQUIRED_FIELDS = ("prompt", "chain", "image")

log = logging.getLogger(__name__)


class GoTDataError(ValueError):
    """A row of a GoT data file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class GoTRow:
    """One training example: the user's prompt, the chain the model should write, the image it should draw."""

    prompt: str
    chain: str
    image_path: Path
    line: int
    file: Path | None = None
    """The shard holding the row (``file:line`` names it in messages)."""

    def load_image(self) -> Image.Image:
        with Image.open(self.image_path) as image:
            return image.convert("RGB")


def _check_row(record, base: Path) -> Path:
    """The row's image path; raises ValueError saying what is wrong with the row."""
    if not isinstance(record, dict):
        raise ValueError(f"a row must be a JSON object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field {name!r} must be a non-empty string, got {value!r}")
    try:
        chain = parse_chain(record["chain"], strict=True)
    except ChainFormatError as err:
        raise ValueError(f"field 'chain': {err}") from None
    if not chain.objects:
        raise ValueError("field 'chain' has no tagged objects")
    flat = next((o for o in chain.objects if o.box.area == 0), None)
    if flat is not None:
        raise ValueError(f"field 'chain': {flat.name!r} has a box of zero area "
                         f"({flat.box.x1},{flat.box.y1}),({flat.box.x2},{flat.box.y2})")
    image_path = base / record["image"]
    if not image_path.is_file():
        raise ValueError(f"field 'image': no file {image_path}")
    try:
        with Image.open(image_path) as image:
            image.verify()
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(f"field 'image': {image_path} does not decode ({err})") from None
    return image_path


def data_files(path: str | Path) -> list[Path]:
    """The JSONL shards a data spec names, in row order.

    Parameters
    ----------
    path : str or Path
        A JSONL file, a folder (its ``*.jsonl`` files) or a glob pattern (``data/shard-*.jsonl``).

    Returns
    -------
    list[Path]
        The shards, sorted by path.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise FileNotFoundError(f"GoT data folder holds no *.jsonl shards: {path}")
        return files
    if any(c in str(path) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"GoT data glob matches no file: {path}")
        return files
    raise FileNotFoundError(f"GoT data file not found: {path}")


class GoTDataset:
    """Validated GoT JSONL data (one file, a folder of shards or a glob); ``dataset[i]`` reads row i from disk.

    Parameters
    ----------
    path : str or Path
        The JSONL file, a folder of ``*.jsonl`` shards, or a glob (see :func:`data_files`).
    skip_invalid : bool
        Skip bad rows (listed in ``skipped`` as ``(line, reason)``; with several shards the reason starts
        with the shard's name) instead of raising.
    """

    def __init__(self, path: str | Path, skip_invalid: bool = False):
        self.path = Path(path)
        self.files = data_files(path)
        self.skip_invalid = skip_invalid
        self.skipped: list[tuple[int, str]] = []
        # Per shard, the byte offset and line number of each good row; _ends[k] = rows in shards 0..k.
        self._offsets: list[array] = []
        self._lines: list[array] = []
        self._ends: list[int] = []
        for file in self.files:
            offsets, lines = self._index(file)
            self._offsets.append(offsets)
            self._lines.append(lines)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(offsets))
        if not len(self):
            raise GoTDataError(f"{self.path}: no valid rows ({len(self.skipped)} skipped)")
        log.info("%s: %d rows in %d shard(s), %d skipped", self.path, len(self), len(self.files), len(self.skipped))

    def _index(self, file: Path) -> tuple[array, array]:
        """One streaming pass over a shard: check each line, keep where the good ones start."""
        offsets, lines = array("q"), array("q")
        base, named = file.parent, len(self.files) > 1
        with open(file, "rb") as f:
            offset = 0
            for number, raw in enumerate(f, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    _check_row(json.loads(raw), base)
                except (ValueError, UnicodeDecodeError) as err:
                    if not self.skip_invalid:
                        raise GoTDataError(f"{file}:{number}: {err}") from None
                    self.skipped.append((number, f"{file.name}: {err}" if named else str(err)))
                    continue
                offsets.append(start)
                lines.append(number)
        return offsets, lines

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> GoTRow:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard = bisect.bisect_right(self._ends, index)
        within = index - (self._ends[shard - 1] if shard else 0)
        file = self.files[shard]
        with open(file, "rb") as f:
            f.seek(self._offsets[shard][within])
            record = json.loads(f.readline())
        return GoTRow(record["prompt"], record["chain"], file.parent / record["image"], self._lines[shard][within], file)
