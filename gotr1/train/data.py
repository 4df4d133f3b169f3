"""GoT training data: JSONL rows ``{"prompt", "chain", "image"}`` validated up front, loaded lazily.

Opening a file checks every row (valid JSON, the three fields as non-empty strings, a chain that parses
strictly with at least one object, an image file that exists and whose header decodes), keeping only the
byte offset of each good row; prompts, chains and pixels are read when a row is asked for. A bad row raises
:class:`GoTDataError` naming the file and line, or with ``skip_invalid=True`` is skipped and counted in
``skipped`` so the run's log can report it. Image paths are relative to the JSONL file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gotr1.chain import ChainFormatError, parse_chain

REQUIRED_FIELDS = ("prompt", "chain", "image")


class GoTDataError(ValueError):
    """A row of a GoT data file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class GoTRow:
    """One training example: the user's prompt, the chain the model should write, the image it should draw."""

    prompt: str
    chain: str
    image_path: Path
    line: int

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
    image_path = base / record["image"]
    if not image_path.is_file():
        raise ValueError(f"field 'image': no file {image_path}")
    try:
        with Image.open(image_path) as image:
            image.verify()
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(f"field 'image': {image_path} does not decode ({err})") from None
    return image_path


class GoTDataset:
    """A validated GoT JSONL file; ``dataset[i]`` reads row i from disk.

    Parameters
    ----------
    path : str or Path
        The JSONL file.
    skip_invalid : bool
        Skip bad rows (listed in ``skipped`` as ``(line, reason)``) instead of raising.
    """

    def __init__(self, path: str | Path, skip_invalid: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GoT data file not found: {self.path}")
        self.skip_invalid = skip_invalid
        self.skipped: list[tuple[int, str]] = []
        self._rows: list[tuple[int, int]] = []  # (byte offset, line number) of each good row
        base = self.path.parent
        with open(self.path, "rb") as f:
            offset = 0
            for number, raw in enumerate(f, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    _check_row(json.loads(raw), base)
                except (ValueError, UnicodeDecodeError) as err:
                    reason = str(err)
                    if not skip_invalid:
                        raise GoTDataError(f"{self.path}:{number}: {reason}") from None
                    self.skipped.append((number, reason))
                    continue
                self._rows.append((start, number))
        if not self._rows:
            raise GoTDataError(f"{self.path}: no valid rows ({len(self.skipped)} skipped)")

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> GoTRow:
        offset, line = self._rows[index]
        with open(self.path, "rb") as f:
            f.seek(offset)
            record = json.loads(f.readline())
        return GoTRow(record["prompt"], record["chain"], self.path.parent / record["image"], line)
