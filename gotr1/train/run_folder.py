"""Who owns a run folder: one run at a time, never mixed with an earlier run, never wiped.

A training run (and ``gotr1 eval --out``, ``gotr1 data convert --out``) *claims* its output folder before it
writes anything into it:

- **One run at a time.** The claim holds an exclusive OS lock (``fcntl.flock``) on :data:`LOCK_FILE` inside
  the folder for the life of the run. The kernel releases it when the process ends, however it ends, so the
  lock file a ``kill -9`` leaves behind never blocks the next run. A second run refuses at once, naming the
  holder's pid and host, which the holder writes into the lock file. Under ``torchrun`` only rank 0 claims
  (:func:`claim_on_rank_zero`); the other ranks learn its answer.
- **Never mixed.** A fresh run refuses a folder that holds anything (an earlier run's checkpoints, metrics,
  caches), naming the folder and both ways out: continue that run (``--resume``) or move it aside
  (``--overwrite``). What a run leaves before its first step counts as empty: the lock file, dead
  temporaries and a ``config.yaml`` alone, so a run stopped before it began can simply be started again.
- **Never wiped.** ``--overwrite`` moves the old contents into a sibling folder ``<name>.overwritten-<time>``;
  nothing is deleted.
- **No leftovers.** Temporary checkpoint folders (``.tmp-step-*``) and files (``*.tmp``) are removed once the
  lock is held: only the lock's holder writes them, so those found then belong to a run that died.

The lock is as good as the file system's ``flock``: local disks and NFSv4 honour it across hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import torch.distributed as dist

from gotr1.train.distributed import rank_and_world

LOCK_FILE = ".gotr1.lock"
_ALONE_IS_EMPTY = {"config.yaml"}
"""Files that, with nothing else beside them, leave a folder free for a fresh run (a run that never stepped)."""


class RunFolderError(ValueError):
    """A run folder that this run may not use as asked; the message names it and the ways out."""


class RunFolderBusyError(RunFolderError):
    """Another live process holds the run folder's lock."""


def _is_dead_temporary(path: Path) -> bool:
    return path.name.startswith(".tmp-step-") or path.name.endswith(".tmp")


def run_contents(folder: str | Path) -> list[str]:
    """Names of what makes ``folder`` hold a run (empty: a fresh run may use it).

    The lock file and dead temporaries never count; a ``config.yaml`` counts only beside something else.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE and not _is_dead_temporary(p))
    return [] if set(names) <= _ALONE_IS_EMPTY else names


def _refuse_contents(folder: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise RunFolderError(f"{folder}: --resume continues the run in this folder and --overwrite would move it "
                             "aside; give one of them")
    contents = [] if resume or overwrite else run_contents(folder)
    if contents:
        shown = ", ".join(contents[:4]) + (", ..." if len(contents) > 4 else "")
        raise RunFolderError(f"{folder} already holds a run ({shown}); a fresh run there would mix with it. Continue "
                             "it with --resume (resume_from), move it aside with --overwrite (overwrite=True), or "
                             "choose an empty folder")


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


def _busy(folder: Path, holder: str) -> RunFolderBusyError:
    return RunFolderBusyError(f"{folder} is in use by another gotr1 run ({holder}); wait for it to end, or "
                              "choose another folder")


def _lock(folder: Path) -> int:
    """An open descriptor of ``folder``'s lock file, exclusively flock-ed, with this process written in it."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise _busy(folder, holder) from None
    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode(), 0)
    return fd


class _HeldLock:
    """The lock of one folder held by this process, shared by every claim of it here."""

    def __init__(self, key: str, fd: int):
        self.key, self.fd, self.claims = key, fd, 0


_HELD: dict[str, _HeldLock] = {}
"""Locks this process holds, by resolved folder: a second flock from the same process would refuse itself."""


class RunFolder:
    """One claim of a run folder; the lock is held until every claim of this process is released (or it ends).

    Attributes
    ----------
    path : Path
    moved_to : Path or None
        Where ``overwrite`` moved the earlier contents.
    """

    def __init__(self, path: Path, held: _HeldLock, moved_to: Path | None = None):
        self.path, self.moved_to, self._held = path, moved_to, held
        held.claims += 1

    def release(self) -> None:
        """Give up this claim (idempotent); the last claim of the process unlocks the folder."""
        held, self._held = self._held, None
        if held is None:
            return
        held.claims -= 1
        if held.claims == 0:
            del _HELD[held.key]
            fcntl.flock(held.fd, fcntl.LOCK_UN)
            os.close(held.fd)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------
# Checking and claiming
# ---------------------------------------------------------------------------------------------


def _as_folder(path: str | Path) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file; a run needs a folder")
    return path


def check_run_folder(path: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse now what :func:`claim_run_folder` would refuse, without claiming or changing anything: a check
    before a slow model load, so a refusal costs seconds."""
    path = _as_folder(path)
    if not path.is_dir():
        return
    if str(path.resolve()) not in _HELD and (path / LOCK_FILE).is_file():
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go at once: this only asks
        except BlockingIOError:
            raise _busy(path, _holder(fd)) from None
        finally:
            os.close(fd)  # closing releases a lock this probe got
    _refuse_contents(path, resume, overwrite)


def claim_run_folder(path: str | Path, *, resume: bool = False, overwrite: bool = False) -> RunFolder:
    """Lock ``path`` for this process's run and apply the folder rules (see the module docstring).

    Parameters
    ----------
    resume : bool
        The run continues what the folder holds (it may hold anything).
    overwrite : bool
        Move what the folder holds into ``<name>.overwritten-<time>`` beside it, then start afresh.

    Raises
    ------
    RunFolderBusyError
        Another process holds the lock (its pid and host named).
    RunFolderError
        The folder holds a run and neither ``resume`` nor ``overwrite`` was given, or both were.
    """
    path = _as_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    held = _HELD.get(key)
    if held is not None:  # another trainer of this process: the rules hold, moving its files does not
        _refuse_contents(path, resume, overwrite=False)
        return RunFolder(path, held)
    fd = _lock(path)
    try:
        _refuse_contents(path, resume, overwrite)
        for dead in [p for p in path.iterdir() if _is_dead_temporary(p)]:
            shutil.rmtree(dead) if dead.is_dir() else dead.unlink()
        moved_to = _move_aside(path) if overwrite else None
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = held = _HeldLock(key, fd)
    return RunFolder(path, held, moved_to)


def _move_aside(path: Path) -> Path | None:
    """Move everything but the lock into a new sibling ``<name>.overwritten-<time>``; None if there was nothing."""
    contents = [p for p in path.iterdir() if p.name != LOCK_FILE]
    if not contents:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.overwritten-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.overwritten-{stamp}-{n}")
    target.mkdir()
    for entry in contents:
        os.rename(entry, target / entry.name)
    print(f"{path}: moved the earlier contents to {target} (overwrite)", file=sys.stderr)
    return target


def claim_on_rank_zero(path: str | Path, *, resume: bool = False, overwrite: bool = False) -> RunFolder | None:
    """:func:`claim_run_folder` on rank 0, its refusal raised on every rank (None on the other ranks).

    The other ranks wait for rank 0's answer, so none runs ahead into collectives that rank 0 will never join.
    """
    rank, world = rank_and_world()
    claim, error = None, None
    if rank == 0:
        try:
            claim = claim_run_folder(path, resume=resume, overwrite=overwrite)
        except RunFolderError as err:
            error = err
    if world > 1:
        answer = [None if error is None else str(error)]
        dist.broadcast_object_list(answer, src=0)
        if error is None and answer[0] is not None:
            raise RunFolderError(answer[0])
    if error is not None:
        raise error
    return claim
