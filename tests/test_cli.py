"""The gotr1 command line: `gotr1 layout` on the shipped example, on text and files, and its errors."""

import subprocess
import sys

import numpy as np
from PIL import Image

from gotr1.chain import parse_chain
from gotr1.cli.commands import example_chain, main
from gotr1.layout import render_layout


def test_layout_of_the_shipped_example_matches_render_layout(tmp_path, capsys):
    out = tmp_path / "layout.png"
    assert main(["layout", "--out", str(out)]) == 0
    written = np.asarray(Image.open(out))
    np.testing.assert_array_equal(written, render_layout(parse_chain(example_chain())))
    assert "yellow vase: (65,488),(582,982)" in capsys.readouterr().out


def test_layout_reads_a_chain_file_and_reports_parse_issues(tmp_path, capsys):
    chain = tmp_path / "chain.txt"
    chain.write_text("a <|obj_start|>cat<|obj_end|> <|box_start|>(10,20),(300,400)<|box_end|> <|obj_start|>dog<|obj_end|> <|box_start|>(1,2)<|box_end|>")
    out = tmp_path / "sub" / "cat.png"
    assert main(["layout", str(chain), "--out", str(out), "--size", "96", "--no-labels"]) == 0
    assert Image.open(out).size == (96, 96)
    captured = capsys.readouterr()
    assert "box needs 4 coordinates, found 2" in captured.err
    assert "1 objects, 1 parse issues" in captured.out


def test_console_script_runs_and_rejects_bad_options(tmp_path):
    # Run from tmp_path: from the checkout, `-m` would import the source tree instead of the installed package.
    run = lambda *args: subprocess.run([sys.executable, "-m", "gotr1.cli", *args], capture_output=True, text=True,
                                       cwd=tmp_path)
    ok = run("layout", "a <|obj_start|>cup<|obj_end|> <|box_start|>(0,0),(500,500)<|box_end|>", "--out", str(tmp_path / "x.png"))
    assert ok.returncode == 0 and (tmp_path / "x.png").is_file()
    bad = run("layout", "--out", str(tmp_path / "y.png"), "--size", "0")
    assert bad.returncode == 2 and "--size" in bad.stderr and "positive integer" in bad.stderr
    missing = run("layout")
    assert missing.returncode == 2 and "--out" in missing.stderr


# ---------------------------------------------------------------------------------------------
# demo, generate, eval, configs
# ---------------------------------------------------------------------------------------------

import csv
import json

import pytest
import yaml

from gotr1.cli.config_io import dump_config, field_docs, load_config, load_sections
from gotr1.cli.jobs import GRPOJob, PolicySettings
from gotr1.grpo.config import GRPOConfig
from gotr1.train.config import SFTConfig


def test_quick_demo_runs_every_stage_and_writes_its_files(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| reward | before SFT | after SFT | after GRPO | GRPO gain |" in printed
    for name in ("layout", "color", "total", "exact copy", "color, shuffled images (control)", "chains cut by the cap"):
        assert f"| {name}" in printed, name
    for png in ("reward_curve.png", "samples.png", "vq_recon.png"):
        assert Image.open(tmp_path / png).size[0] > 0, png
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["stages"]) == {"before SFT", "after SFT", "after GRPO"}
    for stage in summary["stages"].values():
        assert set(stage) == {"layout", "color", "total"} and all(set(v) == {"mean", "se"} for v in stage.values())
    assert set(summary["grpo_gain"]) == {"layout", "color", "total"} and 0 <= summary["sft_exact"] <= 1
    assert summary["threads"] == 1 and {"mse", "color_reconstructed"} <= set(summary["vq"])
    assert (tmp_path / "sft" / "latest").is_file() and (tmp_path / "grpo" / "latest").is_file()


def test_a_second_demo_into_the_same_folder_is_refused_by_name(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "summary.json" in err and "--overwrite" in err
    assert (tmp_path / "summary.json").read_text() == "{}"  # untouched


@pytest.mark.slow  # two demos; test_grpo's two-process test keeps reproducibility in the default run
def test_quick_demo_is_reproducible_for_a_seed(tmp_path):
    """Same seed, same thread count: the same summary, bit for bit (timings aside)."""
    runs = []
    for name in ("a", "b"):
        assert main(["demo", "--quick", "--out", str(tmp_path / name), "--no-progress", "--threads", "1", "--seed", "3"]) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        summary.pop("seconds")
        runs.append(summary)
    assert runs[0] == runs[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from gotr1.policy.model import tiny_janus

    folder = tmp_path_factory.mktemp("policy")
    model, processor = tiny_janus(seed=4)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_generate_writes_chain_layout_and_image_per_sample(tiny_checkpoint, tmp_path):
    out = tmp_path / "gen"
    args = ["generate", "--model", str(tiny_checkpoint), "--prompt", "a red cube", "--prompt", "two cats", "--num", "2",
            "--out", str(out), "--max-chain-tokens", "8"]
    assert main(args) == 0
    for p in range(2):
        for s in range(2):
            stem = out / f"prompt{p:03d}_sample{s:02d}"
            assert stem.with_suffix(".chain.txt").read_text().endswith("\n")
            assert Image.open(stem.with_suffix(".layout.png")).size == (384, 384)
            assert Image.open(stem.with_suffix(".png")).size == (64, 64)


class _SevenJudge:
    """A judge whose every reply is a score of 7 (what a healthy server answers)."""

    def chat(self, requests):
        return ['{"score": 7}'] * len(requests)

    def grounding_size(self, width, height):
        return width, height


def test_eval_writes_a_table_with_every_category(tiny_checkpoint, tmp_path, monkeypatch):
    import gotr1.cli.resolve

    monkeypatch.setattr(gotr1.cli.resolve, "build_judge", lambda *args, **kwargs: _SevenJudge())
    out = tmp_path / "eval"
    args = ["eval", "--benchmark", "judge", "--model", str(tiny_checkpoint), "--judge", "tiny", "--out", str(out),
            "--limit", "2", "--max-chain-tokens", "8", "--no-progress"]
    assert main(args) == 0
    header, values = csv.reader((out / "table.csv").read_text().splitlines())
    assert header[:7] == ["model", "Color", "Shape", "Texture", "2D-Spatial", "Non-Spatial", "Complex"]
    assert values[:7] == ["this run"] + ["0.7000"] * 6
    assert dict(zip(header, values))["prompt lists"].startswith("T2I-CompBench 2023-07")
    assert "| model | Color | Shape |" in (out / "table.md").read_text()
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["category"] for r in rows} == {"color", "shape", "texture", "spatial", "non_spatial", "complex"}


def test_eval_against_a_dead_judge_scores_nothing_and_fails(tiny_checkpoint, tmp_path, capsys):
    """Failures are "not scored" (NaN in the table, null in scores.jsonl), never 0, and the exit code says so."""
    out = tmp_path / "eval"
    args = ["eval", "--benchmark", "judge", "--model", str(tiny_checkpoint), "--judge", "openai",
            "--judge-url", "http://127.0.0.1:9/v1",
            "--judge-timeout", "0.5", "--prompts", "color", "--out", str(out), "--limit", "2",
            "--max-chain-tokens", "8", "--no-progress"]
    assert main(args) == 1
    assert (out / "table.csv").read_text().splitlines()[1].startswith("this run,nan,")
    assert all(json.loads(line)["score"] is None for line in (out / "scores.jsonl").read_text().splitlines())
    err = capsys.readouterr().err
    assert "2 of 2 images not scored" in err and "the judge metrics scored nothing" in err
    assert main(args[:-1] + ["--judge-timeout", "inf", "--no-progress"]) == 2
    assert "--judge-timeout: expected a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("cls", [SFTConfig, GRPOConfig])
def test_config_round_trips_through_yaml_and_documents_every_field(cls, tmp_path):
    config = cls(lr=2e-5, lora_target_modules=("q_proj", "v_proj"), seed=7)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(cls, path) == config
    docs = field_docs(cls)
    assert set(docs) == {f for f in yaml.safe_load(path.read_text())}, "every field has a docstring"


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 1e-5\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match=r"unknown GRPOConfig field\(s\) \['learning_rate'\]"):
        load_config(GRPOConfig, path)
    with pytest.raises(ValueError, match="--group-size"):
        load_config(GRPOConfig, None, {"group_size": "many"})
    with pytest.raises(ValueError, match="GRPOConfig.group_size must be >= 2"):
        load_config(GRPOConfig, None, {"group_size": "1"})
    assert load_config(GRPOConfig, None, {"top_p": "none", "use_lora": "false", "lora_target_modules": "q_proj,k_proj"}) == \
        GRPOConfig(top_p=None, use_lora=False, lora_target_modules=("q_proj", "k_proj"))


def test_training_commands_fail_with_the_field_name_and_status_2(tmp_path, capsys):
    assert main(["sft", "--lr", "0", "--output-dir", str(tmp_path)]) == 2
    assert "SFTConfig.lr must be > 0" in capsys.readouterr().err
    assert main(["grpo", "--prompts", "nowhere", "--output-dir", str(tmp_path)]) == 2
    assert "prompts" in capsys.readouterr().err


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) == 7
    for path in configs:
        sections = (SFTConfig, PolicySettings) if path.name.startswith("sft") else (GRPOConfig, GRPOJob)
        config, job = load_sections(path, None, *sections)
        assert config.max_steps >= 1 and job.model, path
    full, job = load_sections(configs[0].with_name("grpo_janus_pro_7b_full.yaml"), None, GRPOConfig, GRPOJob)
    assert full.fsdp and not full.use_lora and full.beta > 0 and job.reward == "judge"


# ---------------------------------------------------------------------------------------------
# inputs refused before any work (faults users hit)
# ---------------------------------------------------------------------------------------------


def test_oversized_canvas_empty_prompt_and_missing_model_folder_are_refused(tmp_path, capsys):
    from gotr1.layout import MAX_CANVAS_SIZE

    with pytest.raises(SystemExit):
        main(["layout", "--out", str(tmp_path / "x.png"), "--size", "100000"])
    assert f"must be at most {MAX_CANVAS_SIZE} pixels, got 100000" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"size must be an int number of pixels in \[1, 8192\], got 100000"):
        render_layout(parse_chain(example_chain()), size=100_000)
    with pytest.raises(SystemExit):
        main(["generate", "--model", "tiny", "--prompt", "  ", "--out", str(tmp_path)])
    assert "an empty prompt would make an unconditional sample" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "model"
    assert main(["generate", "--model", str(missing), "--prompt", "a cat", "--out", str(tmp_path)]) == 2
    assert f"model: {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("body", "message"), [
    ("save_every: 1.5", "save_every: expected int, got 1.5"),
    ("group_size: 2.7", "group_size: expected int, got 2.7"),
    ("seed: abc", "seed: invalid literal"),
    ("model: 123", "model: expected str, got 123"),
    ("lr: .inf", "lr: expected a finite number, got inf"),
    ("judge_timeout: .inf", "judge_timeout: expected a finite number"),
    ('lr: "abc"', "lr: could not convert string to float"),
    ("use_lora: maybe", "use_lora: expected true or false"),
])
def test_config_files_are_type_checked_field_by_field(tmp_path, body, message):
    path = tmp_path / "c.yaml"
    path.write_text(body + "\n")
    with pytest.raises(ValueError, match=f"c.yaml: {message}"):
        load_sections(path, None, GRPOConfig, GRPOJob)


def test_unambiguous_text_in_config_files_converts(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('use_lora: "false"\nlr: 1e-5\nmax_grad_norm: 2\nlora_target_modules: [q_proj, v_proj]\ntop_k: null\n')
    config = load_config(GRPOConfig, path)
    assert config.use_lora is False and config.lr == 1e-5 and config.max_grad_norm == 2.0
    assert config.lora_target_modules == ("q_proj", "v_proj") and config.top_k is None
    with pytest.raises(ValueError, match="--lr: expected a finite number"):
        load_config(GRPOConfig, None, {"lr": "inf"})


def test_a_damaged_resume_checkpoint_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import gotr1.cli.resolve
    from gotr1.demo.synthetic import write_synthetic_dataset
    from gotr1.policy.model import tiny_janus
    from gotr1.train.sft import SFTTrainer

    data = write_synthetic_dataset(tmp_path / "data", 8, image_size=64)
    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(), SFTConfig(data=str(data), output_dir=str(run), max_steps=2, save_every=1, batch_size=4,
                                        keep_last=None, progress=False)).train()
    (run / "step-0000002" / "optimizer.pt").write_bytes(b"")

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the checkpoint was checked")

    monkeypatch.setattr(gotr1.cli.resolve, "load_any_policy", no_model_load)
    args = ["sft", "--data", str(data), "--output-dir", str(tmp_path / "resumed"), "--resume", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "step-0000002/optimizer.pt: damaged" in err and "newest intact checkpoint is" in err and "step-0000001" in err


@pytest.mark.parametrize("which, categories, layout", [
    ("t2i-compbench", "color,spatial", "color/samples/a green bench and a blue bowl_000000.png"),
    ("geneval", "counting,colors", "00179/samples/0000.png"),
])
def test_eval_benchmarks_run_end_to_end_and_rescore_their_folder(tiny_checkpoint, tmp_path, which, categories, layout):
    """Official layout, tables (tiny metrics: never beside the paper's rows); --images scores the folder again to
    the same table."""
    out = tmp_path / "run"
    common = ["eval", "--benchmark", which, "--categories", categories, "--tiny-metrics", "--no-progress"]
    assert main([*common, "--model", str(tiny_checkpoint), "--out", str(out), "--limit", "1",
                 "--images-per-prompt", "1", "--max-chain-tokens", "8"]) == 0
    assert (out / layout).is_file()
    if which == "geneval":
        assert json.loads((out / "00179" / "metadata.jsonl").read_text())["tag"] == "counting"
    rows = (out / "table.csv").read_text().splitlines()
    assert rows[1].startswith("this run,") and len(rows) == 2, "no published row beside random-weight metrics"
    assert (out / "table.md").read_text().startswith("tiny_metrics: true")
    assert main([*common, "--images", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "table.csv").read_text() == (out / "table.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == which and summary["skipped"] == [] and summary["tiny_metrics"] is True


def test_eval_refuses_unknown_categories_and_unloadable_metric_models(tmp_path, capsys):
    assert main(["eval", "--benchmark", "geneval", "--categories", "colours", "--model", "tiny",
                 "--out", str(tmp_path)]) == 2
    assert "colours" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "t2i-compbench", "--categories", "non_spatial", "--images", str(tmp_path),
                 "--out", str(tmp_path), "--metric-device", "cpu"]) == 2  # CLIP cannot be downloaded here
    err = capsys.readouterr().err
    assert "clip" in err and "openai/clip-vit-base-patch32" in err


# ---------------------------------------------------------------------------------------------
# one line, not a traceback
# ---------------------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-5\nmodel: [tiny\n")
    assert main(["sft", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"gotr1 sft: error: {path}:3:1: YAML syntax error: expected ',' or ']'"), err


def test_a_judge_outage_stops_grpo_with_one_line_the_checkpoint_and_the_resume_command(tmp_path, capsys):
    """The judge answers the check, then only garbage: after max_judge_outage_steps step(s) GRPO stops with a
    checkpoint, one line and exit 75; a dead judge at the start stops it the same way, and the same command
    then runs again (the folder holds only its config)."""
    from fake_judge_server import FakeOpenAIServer

    from gotr1.cli.commands import EXIT_OUTAGE

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square on the left of a blue circle\ntwo green triangles\n")
    run = tmp_path / "run"

    def grpo(url, *extra):
        return ["grpo", "--model", "tiny", "--prompts", str(prompts), "--judge-url", url, "--judge-timeout", "2",
                "--output-dir", str(run), "--prompts-per-step", "2", "--group-size", "2", "--max-chain-tokens", "8",
                "--max-steps", "5", "--save-every", "100", "--max-judge-outage-steps", "1", "--lora-rank", "4",
                "--beta", "0", "--sample-every", "0", "--progress", "false", *extra]

    with FakeOpenAIServer() as judge:
        assert main(grpo(judge.url("garbage"))) == EXIT_OUTAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gotr1 grpo: stopped: the judge or a reward model failed"), err
    assert f"checkpoint {run / 'step-0000001'} written" in err and "After 1 of 5 steps" in err, err
    assert err.endswith(f"resume with: gotr1 grpo --config {run / 'config.yaml'} --resume {run}"), err
    assert (run / "latest").read_text() == "step-0000001"

    dead = tmp_path / "dead"
    run = dead  # a fresh run whose judge never answers
    for _ in range(2):
        assert main(grpo("http://127.0.0.1:9/v1", "--judge-timeout", "0.5")) == EXIT_OUTAGE
        err = capsys.readouterr().err.strip()
        assert "did not answer a check request" in err and "After 0 of 5 steps" in err, err
        assert err.endswith(f"start it again with: gotr1 grpo --config {dead / 'config.yaml'}"), err
