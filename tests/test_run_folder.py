"""Run folders: a fresh run never wipes or mixes with an earlier one, two runs never share one folder (an OS
lock two real processes contend for, released by a kill -9), and a run killed before its first checkpoint
says so and starts again."""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import gotr1.cli.resolve
from gotr1.cli.commands import EXIT_BAD_INPUT, main
from gotr1.demo.synthetic import write_synthetic_dataset
from gotr1.policy.model import tiny_janus
from gotr1.train.config import SFTConfig
from gotr1.train.run_folder import (
    LOCK_FILE,
    RunFolderBusyError,
    RunFolderError,
    claim_run_folder,
    run_contents,
)
from gotr1.train.sft import SFTTrainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("got"), num_samples=8, image_size=64, seed=0)


def _sft(data, out, *extra) -> list[str]:
    return ["sft", "--data", str(data), "--output-dir", str(out), "--batch-size", "4", "--save-every", "2",
            "--keep-last", "none", "--progress", "false", *extra]


def _no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the run folder was checked")

    monkeypatch.setattr(gotr1.cli.resolve, "load_any_policy", refuse)


def _snapshot(folder) -> dict:
    """Every file under ``folder`` (the lock file aside) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


# ---------------------------------------------------------------------------------------------
# The rules, on bare folders
# ---------------------------------------------------------------------------------------------


def test_what_a_run_leaves_before_its_first_step_counts_as_empty_and_dead_temporaries_go(tmp_path):
    run = tmp_path / "run"
    (run / ".tmp-step-0000004" / "model").mkdir(parents=True)
    (run / "latest.tmp").write_text("step-0000004")
    (run / "config.yaml").write_text("lr: 0.1\n")
    (run / LOCK_FILE).write_text('{"pid": 1, "host": "gone", "since": "then"}')  # left by a kill -9
    assert run_contents(run) == []
    with claim_run_folder(run) as claim:
        assert claim.moved_to is None
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "config.yaml"]
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()


def test_a_folder_holding_a_run_is_refused_by_name_and_overwrite_moves_it_aside_whole(tmp_path):
    run = tmp_path / "run"
    (run / "step-0000002").mkdir(parents=True)
    (run / "step-0000002" / "state.json").write_text('{"step": 2}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    before = _snapshot(run)
    with pytest.raises(RunFolderError, match=rf"{run} already holds a run \(metrics.jsonl, step-0000002\).*--resume"
                                             r".*--overwrite"):
        claim_run_folder(run)
    with pytest.raises(RunFolderError, match="--resume .* and --overwrite"):
        claim_run_folder(run, resume=True, overwrite=True)
    assert _snapshot(run) == before
    with claim_run_folder(run, overwrite=True) as claim:
        assert claim.moved_to.name.startswith("run.overwritten-") and claim.moved_to.parent == tmp_path
        assert _snapshot(claim.moved_to) == before, "nothing deleted, nothing changed"
        assert [p.name for p in run.iterdir()] == [LOCK_FILE]
    with claim_run_folder(run, overwrite=True) as again:  # an empty folder: nothing to move
        assert again.moved_to is None


def _locked(folder) -> bool:
    """Whether someone holds ``folder``'s lock: flock conflicts between open files, even of one process."""
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_claim_is_reentrant_in_one_process_and_released_by_the_last_holder(tmp_path):
    first = claim_run_folder(tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunFolderError, match="already holds a run"):  # the rules hold within a process too
        claim_run_folder(tmp_path / "run")
    second = claim_run_folder(tmp_path / "run", resume=True)
    first.release()
    first.release()  # idempotent
    assert _locked(tmp_path / "run")
    second.release()
    assert not _locked(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Item 1: a fresh run into an existing run folder
# ---------------------------------------------------------------------------------------------


def test_a_fresh_run_never_wipes_an_existing_run_folder(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(_sft(data, run, "--max-steps", "3")) == 0
    before = _snapshot(run)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    with monkeypatch.context() as patched:
        _no_model_load(patched)
        assert main(_sft(data, run, "--max-steps", "1")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{run} already holds a run" in err and "--resume" in err and "--overwrite" in err, err
    assert _snapshot(run) == before, "metrics, config, checkpoints and latest untouched"
    with pytest.raises(RunFolderError, match="already holds a run"):  # the Python API keeps the same rule
        SFTTrainer(*tiny_janus(), SFTConfig(data=str(data), output_dir=str(run), batch_size=4, progress=False))
    assert _snapshot(run) == before

    assert main(_sft(data, run, "--max-steps", "1", "--overwrite")) == 0
    (moved,) = tmp_path.glob("run.overwritten-*")
    assert _snapshot(moved) == before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and (run / "latest").read_text() == "step-0000001"
    assert sorted(p.name for p in run.glob("step-*")) == ["step-0000001"]
    assert "overwrite: false" in (run / "config.yaml").read_text(), "config.yaml does not repeat the overwrite"


def test_grpo_eval_and_convert_apply_the_same_rules(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "grpo"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    _no_model_load(monkeypatch)
    assert main(["grpo", "--output-dir", str(run), "--reward", "rules", "--prompts", "color"]) == EXIT_BAD_INPUT
    assert f"{run} already holds a run (metrics.jsonl)" in capsys.readouterr().err

    out = tmp_path / "eval"
    out.mkdir()
    (out / "scores.jsonl").write_text("")
    assert main(["eval", "--benchmark", "t2i-compbench", "--categories", "color", "--tiny-metrics", "--images",
                 str(tmp_path / "none"), "--out", str(out)]) == EXIT_BAD_INPUT  # no images: fails once claimed
    err = capsys.readouterr().err
    assert f"{out} holds an earlier evaluation: resuming it" in err and "--overwrite" in err, err

    converted = tmp_path / "converted"
    (converted / "state.json").parent.mkdir()
    (converted / "state.json").write_text("{}")
    assert main(["data", "convert", "--from", "jsonl", str(data), "--out", str(converted), "--no-progress"]) == 2
    assert f"{converted} already holds a run (state.json)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Item 2: two runs into one folder at once
# ---------------------------------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys
    from gotr1.policy.model import tiny_janus
    from gotr1.train.config import SFTConfig
    from gotr1.train.sft import SFTTrainer
    data, out = sys.argv[1], sys.argv[2]
    trainer = SFTTrainer(*tiny_janus(seed=0), SFTConfig(data=data, output_dir=out, batch_size=4, max_steps=1,
                                                        progress=False))
    trainer.train()
    print("ready", flush=True)
    sys.stdin.readline()  # holds the run folder until killed
""")


def test_a_second_run_refuses_a_folder_in_use_and_a_kill_9_frees_it(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(data), str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()[-2000:]
        who = f"pid {holder.pid} on {socket.gethostname()}"
        with monkeypatch.context() as patched:  # refused at once: before the model loads
            _no_model_load(patched)
            for extra in ([], ["--resume", str(run)], ["--overwrite"]):
                assert main(_sft(data, run, "--seed", "1", *extra)) == EXIT_BAD_INPUT
                err = capsys.readouterr().err
                assert f"{run} is in use by another gotr1 run ({who}" in err, err
        with pytest.raises(RunFolderBusyError, match=f"in use by another gotr1 run \\({who}"):
            SFTTrainer(*tiny_janus(), SFTConfig(data=str(data), output_dir=str(run), batch_size=4, seed=1,
                                                resume_from=str(run), progress=False))
        before = _snapshot(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()
    assert _snapshot(run) == before, "the refused runs wrote nothing"
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # the stale lock file stays...
    assert main(_sft(data, run, "--resume", str(run), "--max-steps", "2")) == 0  # ...and blocks nothing
    assert (run / "latest").read_text() == "step-0000002"
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Item 6: --resume on a run killed before its first checkpoint
# ---------------------------------------------------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_says_so_and_starts_again(data, tmp_path, monkeypatch, capsys):
    import torch

    run = tmp_path / "run"
    real_save = torch.save

    def interrupted(obj, path, *args, **kwargs):  # Ctrl-C in the middle of the first save
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(_sft(data, run, "--max-steps", "2", "--save-every", "2"))
    assert torch.save is real_save
    assert (run / ".tmp-step-0000002").is_dir() and not (run / "latest").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    _no_model_load(monkeypatch)  # each refusal comes before the model loads
    assert main(_sft(data, run, "--max-steps", "2", "--resume", str(run))) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no checkpoint was completed in this run folder" in err and "without --resume" in err, err
    assert main(_sft(data, run, "--max-steps", "1")) == EXIT_BAD_INPUT
    assert f"{run} already holds a run" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(_sft(data, run, "--max-steps", "1", "--overwrite")) == 0
    (moved,) = tmp_path.glob("run.overwritten-*")
    assert (moved / "metrics.jsonl").is_file() and not list(moved.glob(".tmp-step-*")), "dead temporaries removed"
    assert not list(run.glob(".tmp-step-*")) and (run / "latest").read_text() == "step-0000001"
