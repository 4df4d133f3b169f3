"""Checkpoints that are trusted only when they can be: checksums required, no code run by loading one, a full
disk that costs nothing but the save that did not fit (the last good checkpoint resumes bit for bit), and
every file of a checkpoint written with the umask's mode."""

import errno
import hashlib
import json
import os
import stat
import subprocess
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gotr1.cli.commands import EXIT_BAD_INPUT, EXIT_DISK_FULL, main
from gotr1.demo.synthetic import write_synthetic_dataset
from gotr1.policy.model import tiny_janus
from gotr1.train.checkpoint import CorruptCheckpointError, DiskFullError, UnsafeCheckpointError
from gotr1.train.config import SFTConfig
from gotr1.train.sft import SFTTrainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("got"), num_samples=8, image_size=64, seed=0)


def _config(data, out, **overrides):
    base = dict(data=str(data), output_dir=str(out), batch_size=4, lr=3e-3, warmup_steps=1, max_steps=2,
                save_every=1, keep_last=None, progress=False)
    return SFTConfig(**{**base, **overrides})


def _trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same_weights(got, expected):
    assert got.keys() == expected.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def _rehash(checkpoint, name):
    """Record ``name``'s new SHA-256 in checksums.json, as someone altering a checkpoint on purpose would."""
    listed = json.loads((checkpoint / "checksums.json").read_text())
    listed[name] = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
    (checkpoint / "checksums.json").write_text(json.dumps(listed))


# ---------------------------------------------------------------------------------------------
# Item 3: checksums are required
# ---------------------------------------------------------------------------------------------


def test_a_checkpoint_without_checksums_is_refused_by_name_unless_trusted(data, tmp_path, capsys):
    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(seed=0), _config(data, run)).train()
    step = run / "step-0000002"
    (step / "checksums.json").unlink()
    weights = step / "model" / "model.safetensors"
    tensors = load_file(weights)
    name = next(n for n, t in tensors.items() if t.is_floating_point() and t.numel() >= 1000)
    tensors[name].view(-1)[:1000] += 1.0  # finite damage: only the checksums could catch it
    save_file(tensors, weights, metadata={"format": "pt"})

    with pytest.raises(CorruptCheckpointError, match=rf"{step}/checksums.json: missing.*newest intact checkpoint is "
                                                     rf"{run / 'step-0000001'}.*--trust-unverified"):
        SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=3, resume_from=str(run)))
    args = ["sft", "--data", str(data), "--output-dir", str(run), "--batch-size", "4", "--max-steps", "3",
            "--progress", "false", "--resume", str(run)]
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "checksums.json: missing" in err and "Traceback" not in err, err

    with pytest.warns(UserWarning, match="resuming it unverified"):
        trusted = SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=3, resume_from=str(run),
                                                          trust_unverified=True))
    assert trusted.step == 2 and torch.equal(dict(trusted.model.named_parameters())[name].detach(), tensors[name])


# ---------------------------------------------------------------------------------------------
# Item 14: loading a checkpoint runs no code
# ---------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickles by calling ``exec``: what a malicious optimizer.pt could carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_by_name_without_running_it(data, tmp_path, capsys):
    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=1)).train()
    step, marker = run / "step-0000001", tmp_path / "code-ran"
    state = torch.load(step / "optimizer.pt", weights_only=True)
    state["state"][0]["extra"] = _RunsCode(marker)
    torch.save(state, step / "optimizer.pt")
    _rehash(step, "optimizer.pt")  # the checksums agree: only the loader stands in the way

    with pytest.raises(UnsafeCheckpointError, match=rf"{step}/optimizer.pt: refused: .*\(builtins.exec\).*run code"):
        SFTTrainer(*tiny_janus(seed=0), _config(data, tmp_path / "resumed", resume_from=str(run)))
    assert not marker.exists(), "the pickled callable ran"
    args = ["sft", "--data", str(data), "--output-dir", str(tmp_path / "resumed"), "--batch-size", "4",
            "--progress", "false", "--resume", str(run)]
    assert main(args) == EXIT_BAD_INPUT
    assert "optimizer.pt: refused" in capsys.readouterr().err and not marker.exists()


def test_a_checkpoint_with_the_old_numpy_rng_state_still_resumes_exactly(data, tmp_path):
    straight = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "a"))
    straight.train()
    first = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "b", max_steps=1))
    first.train()
    first.close()
    step = tmp_path / "b" / "step-0000001"
    state = torch.load(step / "rng.pt", weights_only=True)
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    state["numpy"] = (numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["gauss"])
    torch.save(state, step / "rng.pt")  # rng.pt as checkpoints wrote it before: a pickled numpy array
    _rehash(step, "rng.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(step / "rng.pt", weights_only=True)

    np.random.seed(123)
    resumed = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "b", resume_from=str(step)))
    np.testing.assert_array_equal(np.random.get_state()[1], keys)
    resumed.train()
    _assert_same_weights(_trainable(resumed.model), _trainable(straight.model))


# ---------------------------------------------------------------------------------------------
# Items 4 and 9: a full disk
# ---------------------------------------------------------------------------------------------


def _mount_tmpfs(folder, size: int, request) -> bool:
    """A tmpfs of ``size`` bytes at ``folder`` (unmounted after the test); False where mounting is not allowed."""
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        return False
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
    return True


@pytest.mark.parametrize("disk", ["tmpfs", "fault-injected"])
def test_a_full_disk_stops_with_one_line_and_the_last_good_checkpoint_resumes_bit_for_bit(data, tmp_path, disk,
                                                                                         request, monkeypatch, capsys):
    straight = SFTTrainer(*tiny_janus(), _config(data, tmp_path / "straight"))  # the CLI's "tiny"
    straight.train()
    size = sum(p.stat().st_size for p in (tmp_path / "straight" / "step-0000001").rglob("*") if p.is_file())
    folder = tmp_path / "disk"
    folder.mkdir()
    if disk == "tmpfs":
        if not _mount_tmpfs(folder, int(1.6 * size), request):
            pytest.skip("mounting a tmpfs needs root here; the fault-injected case covers the logic")
    else:
        real_save = torch.save

        def full_at_step_2(obj, path, *args, **kwargs):
            if ".tmp-step-0000002" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_save(obj, path, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_at_step_2)
    run = folder / "run"
    args = ["sft", "--data", str(data), "--output-dir", str(run), "--batch-size", "4", "--lr", "3e-3",
            "--warmup-steps", "1", "--max-steps", "2", "--save-every", "1", "--keep-last", "none", "--progress",
            "false", "--seed", "0"]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert main(args) == EXIT_DISK_FULL
    short = [str(w.message) for w in warned if "fewer than two checkpoints" in str(w.message)]
    assert len(short) == (1 if disk == "tmpfs" else 0), short  # once per run folder, only when it is true
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"gotr1 sft: error: {run}: the disk is full: checkpoint step-0000002 needs about "), err
    assert "MB are free" in err and "last good checkpoint (step-0000001)" in err and f"--resume {run}" in err
    kept = sorted(p.name for p in run.iterdir() if p.name.startswith((".tmp", "step-", "latest")))
    assert kept == ["latest", "step-0000001"] and (run / "latest").read_text() == "step-0000001", kept
    monkeypatch.undo()

    resumed = SFTTrainer(*tiny_janus(), _config(data, tmp_path / "resumed", resume_from=str(run)))
    assert resumed.step == 1
    resumed.train()
    _assert_same_weights(_trainable(resumed.model), _trainable(straight.model))


def test_debug_keeps_the_traceback_of_a_one_line_failure(tmp_path, monkeypatch, capsys):
    import gotr1.train.shell

    def full(config):
        raise DiskFullError(f"{config.output_dir}: the disk is full", config.output_dir)

    monkeypatch.setattr(gotr1.train.shell, "check_run", full)
    args = ["sft", "--output-dir", str(tmp_path)]
    assert main(args) == EXIT_DISK_FULL
    assert capsys.readouterr().err == f"gotr1 sft: error: {tmp_path}: the disk is full\n"
    assert main([*args, "--debug"]) == EXIT_DISK_FULL
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(f"gotr1 sft: error: {tmp_path}: the disk is full\n")
    monkeypatch.setenv("GOTR1_DEBUG", "1")
    assert main(args) == EXIT_DISK_FULL and "Traceback" in capsys.readouterr().err


def test_a_permission_error_is_one_line_naming_the_path(data, tmp_path, monkeypatch, capsys):
    from gotr1.train.metrics_log import MetricsLog

    def refused(self, record):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(MetricsLog, "write", refused)
    args = ["sft", "--data", str(data), "--output-dir", str(tmp_path / "run"), "--batch-size", "4", "--max-steps",
            "1", "--progress", "false"]
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == f"gotr1 sft: error: [Errno 13] Permission denied: '{tmp_path / 'run' / 'metrics.jsonl'}'", err


# ---------------------------------------------------------------------------------------------
# Item 12: one mode for every file of a checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o027])
def test_every_file_of_a_checkpoint_gets_the_mode_the_umask_gives(data, tmp_path, umask):
    old = os.umask(umask)
    try:
        SFTTrainer(*tiny_janus(seed=0), _config(data, tmp_path, max_steps=1)).train()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "step-0000001").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert "step-0000001/model/model.safetensors" in modes
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
