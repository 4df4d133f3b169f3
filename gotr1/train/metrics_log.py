"""The per-step metrics of a run, as JSONL that survives kills and resumes."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class MetricsLog:
    """Append-only JSONL metrics, one object per logged step; a resumed run appends to the same file.

    At resume the lines past the checkpoint (written by the killed run after its last save) are dropped by
    writing a new file and renaming it over the old one, so a kill during the rewrite loses nothing. A torn
    last line (a write cut short by a kill or a full disk) is dropped with a warning; a broken line before
    it is an error naming ``file:line``.
    """

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume_step:
            kept = [line for line, record in self._records() if record["step"] <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif self.path.exists():
            self.path.unlink()

    def _records(self) -> list[tuple[str, dict]]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("not a metrics record with an integer 'step'")
            except ValueError as err:
                if number == len(lines):
                    warnings.warn(f"{self.path}:{number}: dropping a torn last line ({err})", stacklevel=3)
                    continue
                raise ValueError(f"{self.path}:{number}: unreadable metrics line ({err}); fix or remove it") from None
            records.append((line, record))
        return records

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return [record for _, record in self._records()] if self.path.exists() else []
