"""Convert published GoT data into gotr1's SFT files: sharded JSONL ``{"prompt", "chain", "image"}`` plus images.

The conversion streams: records are read one at a time and written as they come, so memory stays constant
however large the source. Output in ``out_dir``::

    shard-00000.jsonl ...   rows GoTDataset loads; ``image`` is relative to the shard
    images/ab/<hash>.jpg    copied images, named by a hash of the source file and record key
    summary.json            records in, written, repairs by kind, rejects by reason with their first locations
    state.json              progress at the last complete shard (resume)

``out_dir`` is a run folder (:mod:`gotr1.train.run_folder`): locked while a conversion writes it, and one
that holds an earlier conversion is refused unless ``resume`` (continue it: a rerun after a kill resumes
from the last complete shard, the unfinished shard discarded and its records read again, so no row is
written twice; images are named stably and written only once) or ``overwrite`` (move it aside).

Field names of the published datasets are not documented; the defaults try the names below in order and
each can be set. Not checked against the hub: whether GoT's boxes are on 0-1000 (coordinates outside are
clamped and counted), OmniEdit-GoT's placeholder spelling and ``coord`` value shapes (any key of the
mapping is replaced where it occurs; values ``[x1, y1, x2, y2]``, ``[[x1, y1], [x2, y2]]`` or
``"(x1,y1),(x2,y2)"``), and which OmniEdit image column is the edited image (set ``image_field``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from gotr1.progress import progress_bar
from gotr1.train.got_convert import ChainRejected, convert_chain
from gotr1.train.run_folder import claim_run_folder

FORMATS = ("got", "got-coord", "jsonl", "parquet", "webdataset")

PROMPT_FIELDS = ("prompt", "caption", "txt")
CHAIN_FIELDS = ("got", "chain", "cot")
IMAGE_FIELDS = ("image", "jpg", "jpeg", "png", "webp", "image_path")
COORD_FIELDS = ("coord", "coords")

EXAMPLES_PER_REASON = 5
STATE_FILE = "state.json"
SUMMARY_FILE = "summary.json"
_IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class RecordRejected(ValueError):
    """A record that cannot become a row; ``reason`` is its category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class SourceRecord:
    """One record as read: its fields, where it came from (``file:line`` or ``file#key``) and a stable key."""

    fields: dict | None
    location: str
    key: str
    base: Path  # image paths in the record are relative to this folder


# ---------------------------------------------------------------------------------------------
# Readers: each yields SourceRecords in a fixed order, so a resume can skip the first N
# ---------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[SourceRecord]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            yield SourceRecord(record, f"{path}:{number}", str(number), path.parent)


def _read_json(path: Path) -> Iterator[SourceRecord]:
    """A JSON array of records (read whole: JSON arrays cannot be streamed with the standard library)."""
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if isinstance(records, dict):
        records = records.get("data", [records])
    for index, record in enumerate(records):
        yield SourceRecord(record, f"{path}#{index}", str(index), path.parent)


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from None
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        for record in batch.to_pylist():
            yield SourceRecord(record, f"{path}#{index}", str(index), path.parent)
            index += 1


def _read_webdataset(path: Path) -> Iterator[SourceRecord]:
    """A tar shard: members sharing a key (the name up to the first dot of its basename) form one record.

    A ``.json`` member's fields are merged in; every other member becomes a field named by its extension,
    holding bytes (``.txt`` holds text).
    """
    with tarfile.open(path, mode="r|*") as tar:
        key, fields = None, {}
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, ext = base.partition(".")
            member_key = f"{folder}/{stem}" if folder else stem
            if member_key != key and key is not None:
                yield SourceRecord(fields, f"{path}#{key}", key, path.parent)
                fields = {}
            key = member_key
            data = tar.extractfile(member).read()
            ext = ext.lower()
            if ext == "json":
                try:
                    fields.update(json.loads(data))
                except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
                    fields["json"] = None
            elif ext == "txt":
                fields[ext] = data.decode("utf-8", errors="replace")
            else:
                fields[ext] = data
        if key is not None:
            yield SourceRecord(fields, f"{path}#{key}", key, path.parent)


def _reader(path: Path, source_format: str):
    if source_format == "parquet":
        return _read_parquet
    if source_format == "webdataset":
        return _read_webdataset
    if source_format == "jsonl":
        return _read_jsonl
    # got and got-coord: the container is told by the file name
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return _read_webdataset
    if name.endswith(".json"):
        return _read_json
    return _read_jsonl


# ---------------------------------------------------------------------------------------------
# One record -> one row
# ---------------------------------------------------------------------------------------------


def _pick(fields: dict, name: str | None, candidates: tuple[str, ...]):
    for key in (name,) if name else candidates:
        if fields.get(key) is not None:
            return fields[key]
    return None


def _image_bytes(value, base: Path) -> bytes:
    """The image's encoded bytes from a path (relative to ``base``), raw bytes or a ``{"bytes", "path"}`` struct."""
    if isinstance(value, dict):  # the parquet image struct of the hub's viewer
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        path = base / value
        if not path.is_file():
            raise RecordRejected("image file missing", str(path))
        return path.read_bytes()
    raise RecordRejected("no image", f"unusable image value of type {type(value).__name__}")


def _image_suffix(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return _IMAGE_SUFFIX.get(image.format, ".png" if image.format is None else f".{image.format.lower()}")
    except Exception as err:  # PIL raises many types for corrupt data
        raise RecordRejected("unreadable image", str(err)[:120]) from None


def _write_image(out_dir: Path, name: str, data: bytes) -> str:
    """Write the image once (atomically); the path relative to ``out_dir``."""
    relative = Path("images") / name[:2] / name
    target = out_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
    return relative.as_posix()


def _convert_record(record: SourceRecord, source_id: str, out_dir: Path, options: dict) -> tuple[dict, Counter]:
    fields = record.fields
    if not isinstance(fields, dict):
        raise RecordRejected("bad record", "not a JSON object")
    prompt = _pick(fields, options["prompt_field"], PROMPT_FIELDS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordRejected("no prompt")
    image = _pick(fields, options["image_field"], IMAGE_FIELDS)
    if image is None:
        raise RecordRejected("no image")
    coords = _pick(fields, options["coord_field"], COORD_FIELDS)
    if options["source_format"] == "got-coord" and coords is None:
        raise RecordRejected("no coord")
    chain, repairs = convert_chain(_pick(fields, options["chain_field"], CHAIN_FIELDS), coords)
    data = _image_bytes(image, record.base)
    suffix = _image_suffix(data)
    name = hashlib.sha256(f"{source_id}#{record.key}".encode()).hexdigest()[:24] + suffix
    return {"prompt": prompt.strip(), "chain": chain, "image": _write_image(out_dir, name, data)}, repairs


# ---------------------------------------------------------------------------------------------
# Shards, state and summary
# ---------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


class ShardWriter:
    """Rows into ``shard-NNNNN.jsonl``: written to a ``.partial`` file, renamed when the shard is complete."""

    def __init__(self, out_dir: Path, index: int):
        self.out_dir = out_dir
        self.index = index
        self.rows = 0
        self._file = None

    def write(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self._path(partial=True), "w", encoding="utf-8")
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows += 1

    def close(self) -> str | None:
        """Finish the current shard; its file name, or None when it holds no rows."""
        if self._file is None:
            return None
        self._file.close()
        self._file = None
        final = self._path(partial=False)
        os.replace(self._path(partial=True), final)
        self.index, self.rows = self.index + 1, 0
        return final.name

    def _path(self, partial: bool) -> Path:
        return self.out_dir / f"shard-{self.index:05d}.jsonl{'.partial' if partial else ''}"


def _fresh_state(sources: list[str], source_format: str) -> dict:
    return {"sources": sources, "source_format": source_format, "consumed": {}, "complete": [], "shards": [],
            "records_in": 0, "written": 0, "repaired_records": 0, "repairs": {}, "rejected": {}, "finished": False}


def _load_state(out_dir: Path, sources: list[str], source_format: str) -> dict:
    path = out_dir / STATE_FILE
    if not path.is_file():
        return _fresh_state(sources, source_format)
    state = json.loads(path.read_text(encoding="utf-8"))
    if state["sources"] != sources or state["source_format"] != source_format:
        raise ValueError(f"{out_dir} holds a conversion of other sources or another format "
                         f"({state['source_format']}: {state['sources']}); choose an empty out_dir, or --overwrite "
                         "to move this one aside")
    return state


def _reject(state: dict, err: RecordRejected | ChainRejected, location: str) -> None:
    entry = state["rejected"].setdefault(err.reason, {"count": 0, "examples": []})
    entry["count"] += 1
    if len(entry["examples"]) < EXAMPLES_PER_REASON:
        entry["examples"].append({"at": location, "detail": err.detail})


def _summary(state: dict) -> dict:
    return {key: state[key] for key in ("source_format", "sources", "records_in", "written", "repaired_records",
                                        "repairs", "rejected", "shards", "finished")}


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------


def convert(sources, out_dir, *, source_format: str, prompt_field: str | None = None, chain_field: str | None = None,
            image_field: str | None = None, coord_field: str | None = None, shard_size: int = 10000,
            progress: bool = True, resume: bool = False, overwrite: bool = False) -> dict:
    """Convert GoT source files into gotr1's SFT JSONL shards; resumable (``resume``) and idempotent.

    Parameters
    ----------
    sources : path or list of paths
        Source files, read in the order given (a rerun must pass the same list).
    out_dir : path
        Where shards, ``images/``, ``summary.json`` and ``state.json`` go.
    source_format : str
        One of :data:`FORMATS`. ``got``: GoT model text (Qwen2.5-VL tags, colours) in ``.json``, ``.jsonl``,
        ``.parquet`` or ``.tar`` files (told by the name); ``got-coord``: the same with placeholders and a
        coord field, required; ``jsonl`` / ``parquet`` / ``webdataset``: that container, chains converted
        when they hold GoT's tags and passed through (coordinates still repaired) when already GoT-R1.
    prompt_field, chain_field, image_field, coord_field : str, optional
        Field names; by default the first present of :data:`PROMPT_FIELDS`, :data:`CHAIN_FIELDS`,
        :data:`IMAGE_FIELDS`, :data:`COORD_FIELDS`.
    shard_size : int
        Rows per shard; progress is saved after each complete shard.
    progress : bool
        Show a progress bar.
    resume, overwrite : bool
        Continue the conversion ``out_dir`` holds (the same sources), or move it aside and start afresh;
        without either, an ``out_dir`` holding anything is refused.

    Returns
    -------
    dict
        The summary also written to ``summary.json``: ``records_in``, ``written``, ``repaired_records``,
        ``repairs`` (count by kind), ``rejected`` (by reason: ``count`` and the first ``examples`` with
        ``at`` = ``file:line`` or ``file#key``), ``shards``.
    """
    if source_format not in FORMATS:
        raise ValueError(f"source_format must be one of {FORMATS}, got {source_format!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    paths = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"source file not found: {path}")
    out_dir = Path(out_dir)
    with claim_run_folder(out_dir, resume=resume, overwrite=overwrite):
        return _convert(paths, out_dir, source_format, shard_size, progress, {
            "prompt_field": prompt_field, "chain_field": chain_field, "image_field": image_field,
            "coord_field": coord_field, "source_format": source_format})


def _convert(paths: list[Path], out_dir: Path, source_format: str, shard_size: int, progress: bool,
             options: dict) -> dict:
    """:func:`convert` in its claimed ``out_dir``."""
    source_ids = [str(p.resolve()) for p in paths]
    state = _load_state(out_dir, source_ids, source_format)
    for stale in out_dir.glob("shard-*.jsonl.partial"):
        stale.unlink()  # rows of the shard a kill interrupted: their records are read again below
    writer = ShardWriter(out_dir, len(state["shards"]))

    def finish_shard() -> None:
        # Saved only here: a kill loses the records since the last complete shard, and a rerun reads them again.
        name = writer.close()
        if name is not None:
            state["shards"].append(name)
        _write_json_atomic(out_dir / STATE_FILE, state)

    with progress_bar(enabled=progress, desc="convert", unit="rec", initial=state["records_in"]) as bar:
        for path, source_id in zip(paths, source_ids):
            if source_id in state["complete"]:
                continue
            skip = state["consumed"].get(source_id, 0)
            for index, record in enumerate(_reader(path, source_format)(path)):
                if index < skip:
                    continue
                state["records_in"] += 1
                state["consumed"][source_id] = index + 1
                bar.update(1)
                try:
                    row, repairs = _convert_record(record, source_id, out_dir, options)
                except (RecordRejected, ChainRejected) as err:
                    _reject(state, err, record.location)
                    continue
                writer.write(row)
                state["written"] += 1
                state["repaired_records"] += bool(repairs)
                for kind, count in repairs.items():
                    state["repairs"][kind] = state["repairs"].get(kind, 0) + count
                if writer.rows >= shard_size:
                    finish_shard()
            state["complete"].append(source_id)
    state["finished"] = True
    finish_shard()
    summary = _summary(state)
    _write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
