"""Per-GPU launch configurations of the kernels: search spaces, shipped defaults and the tuned-config store.

Each tunable kernel declares a small search space (a dict of allowed values per launch parameter), the
default it ships with, and a shape bucket (vocabulary and batch sizes rounded up to powers of two), so one
tuned entry serves every shape that behaves alike. ``python -m gotr1.kernels.tune`` times the space on the
current GPU and writes the best configuration per (device name, kernel, bucket) to a JSON file:

.. code-block:: json

    {"version": 1,
     "devices": {"NVIDIA H200": {
         "grpo_forward": {"V16384": {"BLOCK_V": 2048, "num_warps": 4, "num_stages": 3}},
         "fused_linear": {"V131072_H2048": {"chunk_mib": 512}}}}}

The launchers ask :func:`tuned_config` on CUDA, a dict lookup: the file is read once per process and never
tuned during a training step. Nothing here can change a result beyond rounding: a missing file or bucket
gives the default silently; a file without this device (tuned elsewhere, stale), malformed JSON, an unknown
kernel or a configuration outside the kernel's space warns once, naming the file and key, and gives the default.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

__all__ = ["KERNELS", "KernelSpace", "config_path", "load_tuned", "config_for", "tuned_config", "save_tuned", "clear_cache",
           "device_name", "chunk_rows"]

FORMAT_VERSION = 1
ENV_VAR = "GOTR1_KERNEL_CONFIGS"


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class KernelSpace:
    """A tunable kernel: allowed values per launch parameter, the shipped default and its shape bucket.

    ``bucket`` maps the launch's shape (keyword arguments, e.g. ``V=``) to the key its tuned entry is stored under.
    """

    name: str
    space: dict[str, tuple]
    default: dict[str, int]
    bucket: Callable[..., str]
    prune: Callable[[dict], str | None] = lambda config: None
    """Why a configuration cannot win (the tuner does not time it), or None."""

    def configs(self) -> list[dict[str, int]]:
        """Every configuration of the space (their cartesian product), the default first."""
        out = [{}]
        for key, values in self.space.items():
            out = [{**c, key: v} for c in out for v in values]
        return [dict(self.default)] + [c for c in out if c != self.default]

    def candidates(self) -> tuple[list[dict[str, int]], list[tuple[dict[str, int], str]]]:
        """The configurations worth timing (the default first, always) and the pruned ones with the reason."""
        kept, pruned = [], []
        for config in self.configs():
            why = None if config == self.default else self.prune(config)
            (kept.append(config) if why is None else pruned.append((config, why)))
        return kept, pruned

    def problem(self, config) -> str | None:
        """Why ``config`` is not a configuration of this space, or None if it is."""
        if not isinstance(config, dict) or set(config) != set(self.space):
            return f"expected the keys {sorted(self.space)}, got {config!r}"
        for key, value in config.items():
            if isinstance(value, bool) or value not in self.space[key]:
                return f"{key}={value!r} is not one of {list(self.space[key])}"
        return None


# Row kernels of the loss: one row per program walking V in BLOCK_V chunks. The number of rows only sets the
# grid, so V alone decides the best tile. Defaults from a sweep on an H200 (bf16, V = 16384 and 102400): the
# read-only forward streams best with small tiles and few warps, the read+write backward with larger ones.
_ROW_SPACE = {"BLOCK_V": (512, 1024, 2048, 4096, 8192, 16384), "num_warps": (2, 4, 8, 16), "num_stages": (2, 3, 4)}


def _prune_rows(config: dict, default_stages: int) -> str | None:
    """Row-kernel configurations that cannot win, from their sm_90 builds (``python -m gotr1.kernels.aot --space``):
    ``num_stages`` changes no instruction (the loops have no ``tl.dot`` to pipeline: the three builds are the same
    binary, so timing them apart times noise); above 64 elements of a tile per thread the kernel holds 96-255
    registers, a few warps per SM; below 4 a thread loads less than 8 bytes at a time."""
    per_thread = config["BLOCK_V"] // (32 * config["num_warps"])
    if config["num_stages"] != default_stages:
        return f"num_stages={config['num_stages']} builds the same binary as {default_stages}"
    if per_thread > 64:
        return f"{per_thread} elements per thread: 96+ registers"
    if per_thread < 4:
        return f"{per_thread} elements per thread: loads under 8 bytes"
    return None

KERNELS: dict[str, KernelSpace] = {k.name: k for k in (
    KernelSpace("grpo_forward", _ROW_SPACE, {"BLOCK_V": 2048, "num_warps": 4, "num_stages": 3},
                lambda *, V: f"V{_pow2(V)}", lambda config: _prune_rows(config, 3)),
    KernelSpace("grpo_backward", _ROW_SPACE, {"BLOCK_V": 8192, "num_warps": 8, "num_stages": 3},
                lambda *, V: f"V{_pow2(V)}", lambda config: _prune_rows(config, 3)),
    # Logits held per chunk of the fused-linear loss; every chunk re-reads d W, so bigger is faster up to
    # the point where the matmuls are large anyway. 512 MiB measured 1.22x the three matmuls (one chunk: 1.21x).
    KernelSpace("fused_linear", {"chunk_mib": (128, 256, 512, 1024, 2048)}, {"chunk_mib": 512},
                lambda *, V, H: f"V{_pow2(V)}_H{_pow2(H)}"),
    # The sampler's BLOCK is fixed: its noise is keyed by the chunk index start // BLOCK, so another BLOCK
    # draws other samples. Rows per program and warps change only speed. num_warps is capped at BLOCK / 256.
    KernelSpace("sample", {"ROWS": (1, 2, 4), "num_warps": (4, 8, 16)}, {"ROWS": 1, "num_warps": 16},
                lambda *, B, V: f"B{_pow2(B)}_V{_pow2(V)}"),
    # One program over the whole batch of rewards, BLOCK_ELEMS rewards per tile.
    KernelSpace("advantages", {"BLOCK_ELEMS": (256, 1024, 4096, 16384), "num_warps": (1, 2, 4, 8)},
                {"BLOCK_ELEMS": 4096, "num_warps": 4}, lambda *, n, G: f"N{_pow2(n)}_G{_pow2(G)}"),
)}


def chunk_rows(config: dict, V: int, element_size: int) -> int:
    """Tokens per chunk of the fused-linear loss for ``config["chunk_mib"]`` MiB of ``[chunk, V]`` logits."""
    return max(1, (config["chunk_mib"] << 20) // (V * element_size))


# ---------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------

_loaded: dict[tuple[str, str], dict] = {}
_device_names: dict[int, str] = {}


def config_path() -> Path:
    """The tuned-config file: ``$GOTR1_KERNEL_CONFIGS``, else ``~/.cache/gotr1/kernels.json``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gotr1" / "kernels.json"


def clear_cache() -> None:
    """Forget what was read, so the next lookup reads the file again (after tuning, and in tests)."""
    _loaded.clear()


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name`` of a CUDA device, memoised per index."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _device_names:
        _device_names[index] = torch.cuda.get_device_name(index)
    return _device_names[index]


def _warn(message: str) -> None:
    warnings.warn(f"gotr1 kernel configs: {message}; using the shipped defaults", RuntimeWarning, stacklevel=3)


def _read(path: Path) -> dict | None:
    """The file's ``devices`` mapping; None (after a warning) when the file is unreadable or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _warn(f"cannot read {path} ({err})")
        return None
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict) or not all(isinstance(v, dict) for v in devices.values()):
        _warn(f"{path} has no 'devices' mapping of device name -> kernel -> bucket -> config")
        return None
    return devices


def load_tuned(name: str) -> dict[str, dict[str, dict[str, int]]]:
    """The valid tuned configurations of device ``name``: ``{kernel: {bucket: config}}``.

    Read once per process and file (memoised; :func:`clear_cache` forgets). A missing file gives ``{}``
    silently; a file without ``name``, malformed JSON, unknown kernels and configurations outside their
    kernel's space warn once, naming the file and key, and are left out (their kernels use the defaults).
    """
    path = config_path()
    key = (str(path), name)
    if key in _loaded:
        return _loaded[key]
    devices = _read(path)
    entries = (devices or {}).get(name)
    if devices and entries is None:
        _warn(f"{path} holds no configs for device {name!r} (it has {sorted(devices)}); re-run "
              f"`python -m gotr1.kernels.tune` on this GPU")
    tuned = {}
    for kernel, buckets in (entries or {}).items():
        where = f"{path} [{name!r}][{kernel!r}]"
        if kernel not in KERNELS or not isinstance(buckets, dict):
            _warn(f"{where}: not a known kernel ({sorted(KERNELS)}) with a mapping of buckets")
            continue
        for bucket, config in buckets.items():
            problem = KERNELS[kernel].problem(config)
            if problem is not None:
                _warn(f"{where}[{bucket!r}]: {problem}")
                continue
            tuned.setdefault(kernel, {})[bucket] = dict(config)
    _loaded[key] = tuned
    return tuned


def config_for(kernel: str, name: str, **shape) -> dict[str, int]:
    """The configuration of ``kernel`` for ``shape`` (e.g. ``V=16384``) on the device called ``name``: the
    stored one for its bucket, else the kernel's default."""
    spec = KERNELS[kernel]
    found = load_tuned(name).get(kernel, {}).get(spec.bucket(**shape))
    return dict(found if found is not None else spec.default)


def tuned_config(kernel: str, device: torch.device, **shape) -> dict[str, int]:
    """:func:`config_for` the CUDA ``device`` a launcher runs on."""
    return config_for(kernel, device_name(device), **shape)


def save_tuned(name: str, best: dict[str, dict[str, dict[str, int]]], path: Path | None = None) -> Path:
    """Merge ``best`` (``{kernel: {bucket: config}}``) for device ``name`` into the file, written atomically.

    Entries of other devices, kernels and buckets are kept; an unreadable file is replaced. Returns the path.
    """
    path = Path(path) if path is not None else config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        devices = data["devices"] if isinstance(data, dict) and isinstance(data.get("devices"), dict) else {}
    except (OSError, ValueError):
        devices = {}
    if not isinstance(devices.get(name), dict):
        devices[name] = {}
    mine = devices[name]
    for kernel, buckets in best.items():
        if not isinstance(mine.get(kernel), dict):
            mine[kernel] = {}
        for bucket, config in buckets.items():
            problem = KERNELS[kernel].problem(config)
            assert problem is None, f"{kernel} [{bucket}]: {problem}"
            mine[kernel][bucket] = dict(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"version": FORMAT_VERSION, "devices": devices}, indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    clear_cache()
    return path
