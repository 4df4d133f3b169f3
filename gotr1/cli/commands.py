"""The ``gotr1`` command line: one subcommand per job, each documented by ``--help``.

- ``gotr1 demo [--out DIR] [--quick]``: the whole method on a tiny model, offline, on the CPU;
- ``gotr1 sft --config FILE`` / ``gotr1 grpo --config FILE``: the two training stages, every config field
  also a ``--field-name`` option, ``--resume DIR`` to continue a killed run;
- ``gotr1 generate --model PATH --prompt TEXT --out DIR``: chains, layout canvases and images;
- ``gotr1 eval --model PATH --prompts FILE_OR_CATEGORIES --judge ... --out DIR``: a T2I-CompBench-style table;
  ``gotr1 eval convert-blip ORIGINAL.pth OUT_DIR`` (the original 480-px BLIP VQA checkpoint for ``--blip-model``)
  and ``gotr1 eval import-official DIR`` (the official scripts' results beside gotr1's);
- ``gotr1 layout [CHAIN_TEXT_OR_FILE] --out layout.png``: the layout canvas of a chain (the picture the
  spatial reward shows the judge); without a chain, the example chain shipped with the package.

A failure is one line on stderr, never a traceback (``--debug`` or ``GOTR1_DEBUG=1`` adds it); the exit
status says what kind of failure it was (:data:`EXIT_BAD_INPUT`, :data:`EXIT_DISK_FULL`, :data:`EXIT_OUTAGE`;
1 for a run that ran and failed at its job). Errors of input name the bad option, config field, file or folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import traceback
from importlib import resources
from pathlib import Path

import numpy as np

EXIT_BAD_INPUT = 2
"""Bad input: an option, config field, data row, path or run folder that cannot be used as given (the line names it)."""
EXIT_DISK_FULL = 74
"""The disk filled (EX_IOERR): the last good checkpoint is kept; free space, then resume (retrying as is will not
help)."""
EXIT_OUTAGE = 75
"""Stopped by an outage of the judge or a reward server, with a checkpoint to resume from (EX_TEMPFAIL: retry later
with the resume command the line prints)."""


class _Stopped(Exception):
    """A run stopped by an outage, resumable (exit :data:`EXIT_OUTAGE`); the message says how to go on."""


def example_chain() -> str:
    """The GoT-R1 chain shipped with the package, used when ``gotr1 layout`` is given none."""
    return resources.files("gotr1").joinpath("assets/example_chain.txt").read_text(encoding="utf-8").strip()


def _read_chain(source: str | None) -> str:
    if source is None:
        return example_chain()
    path = Path(source)
    # A chain text can be long; only short arguments without tags are worth checking on disk.
    if "<|" not in source and len(source) < 4096 and path.is_file():
        return path.read_text(encoding="utf-8")
    return source


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _canvas_size(text: str) -> int:
    from gotr1.layout import MAX_CANVAS_SIZE

    value = _positive_int(text)
    if value > MAX_CANVAS_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CANVAS_SIZE} pixels, got {value}")
    return value


def _prompt_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty prompt would make an unconditional sample; give the caption")
    return text


def _cmd_layout(args: argparse.Namespace) -> int:
    from gotr1.chain import parse_chain
    from gotr1.layout import render_layout, to_pil

    chain = parse_chain(_read_chain(args.chain))
    for issue in chain.errors:
        print(f"warning: {issue.message} at offset {issue.offset}: {issue.span!r}", file=sys.stderr)
    if not chain.objects:
        print("warning: the chain has no well-formed objects; the canvas is blank", file=sys.stderr)
    canvas = render_layout(chain, size=args.size, line_width=args.line_width, labels=not args.no_labels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(canvas).save(out)
    for obj in chain.objects:
        print(f"{obj.name}: ({obj.box.x1},{obj.box.y1}),({obj.box.x2},{obj.box.y2})")
    print(f"wrote {out} ({args.size}x{args.size}, {len(chain.objects)} objects, {len(chain.errors)} parse issues)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gotr1.demo.run import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress, threads=args.threads,
             overwrite=args.overwrite)
    return 0


def _train_settings(args, config_cls, job_cls):
    """The trainer config and the command's own settings from ``--config`` and the options, checked against the
    checkpoint and run folder before the model loads (a refusal should cost seconds, not a model load)."""
    from gotr1.cli.config_io import config_overrides, load_sections
    from gotr1.train.shell import check_run

    overrides = config_overrides(args)
    if args.resume:
        overrides["resume_from"] = args.resume
    config, job = load_sections(args.config, overrides, config_cls, job_cls)
    check_run(config)
    return config, job


def _write_run_config(trainer, config, job) -> None:
    """``config.yaml`` in the run folder the trainer has claimed (rank 0): both kinds of settings, loadable again
    with ``--config``. ``overwrite`` and ``trust_unverified`` describe this start, not the run: written false."""
    from gotr1.cli.config_io import dump_config

    if trainer.run_folder is not None:
        start_only = dataclasses.replace(config, overwrite=False, trust_unverified=False)
        (trainer.output_dir / "config.yaml").write_text(dump_config(job, start_only), encoding="utf-8")


def _cmd_sft(args: argparse.Namespace) -> int:
    from gotr1.cli.jobs import PolicySettings
    from gotr1.cli.resolve import load_any_policy
    from gotr1.train.config import SFTConfig
    from gotr1.train.distributed import local_device
    from gotr1.train.sft import SFTTrainer

    config, job = _train_settings(args, SFTConfig, PolicySettings)
    model, processor = load_any_policy(job.model, dtype=job.dtype, device=local_device())
    trainer = SFTTrainer(model, processor, config)
    try:
        _write_run_config(trainer, config, job)
        trainer.train()
    finally:
        trainer.close()
    return 0


def _resume_command(out: Path) -> str:
    """How to go on with the GRPO run in ``out`` after it stopped."""
    if (out / "latest").is_file():
        return f"resume with: gotr1 grpo --config {out / 'config.yaml'} --resume {out}"
    return f"start it again with: gotr1 grpo --config {out / 'config.yaml'}"


def _cmd_grpo(args: argparse.Namespace) -> int:
    from gotr1.cli.jobs import GRPOJob
    from gotr1.cli.resolve import build_reward, load_any_policy
    from gotr1.grpo.config import GRPOConfig
    from gotr1.grpo.trainer import GRPOTrainer
    from gotr1.prompt_sets import read_prompt_mixture
    from gotr1.rewards.policy_reward import JudgeUnavailableError
    from gotr1.train.distributed import join_process_group, leave_process_group, local_device

    join_process_group()
    config, job = _train_settings(args, GRPOConfig, GRPOJob)
    prompts = read_prompt_mixture(job.prompts, seed=config.seed)
    model, processor = load_any_policy(job.model, dtype=job.dtype, device=local_device())
    trainer = GRPOTrainer(model, processor, build_reward(job), config, prompts)
    try:
        _write_run_config(trainer, config, job)
        trainer.train()
    except JudgeUnavailableError as err:
        raise _Stopped(f"{err}. After {trainer.step} of {config.max_steps} steps; "
                       f"{_resume_command(trainer.output_dir)}") from err
    finally:
        trainer.close()
    leave_process_group()
    return 0


def _settings(args, *classes) -> tuple:
    """Instances of ``classes`` from their ``--field`` options (no YAML file)."""
    from gotr1.cli.config_io import config_overrides, load_sections

    return load_sections(None, config_overrides(args), *classes)


def _cmd_generate(args: argparse.Namespace) -> int:
    from gotr1.cli.resolve import load_any_policy
    from gotr1.layout import render_layout, to_pil
    from gotr1.rollout import Sampling, generate_batched
    from gotr1.train.distributed import local_device

    (sampling,) = _settings(args, Sampling)
    model, processor = load_any_policy(args.model, device=local_device())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for _, r in generate_batched(model, processor, args.prompt, num_samples=args.num, sampling=sampling,
                                 progress=False):
        for row, (text, chain) in enumerate(zip(r.texts, r.chains)):
            stem = out / f"prompt{int(r.group[row]):03d}_sample{row % args.num:02d}"
            stem.with_suffix(".chain.txt").write_text(text + "\n", encoding="utf-8")
            to_pil(render_layout(chain)).save(stem.with_suffix(".layout.png"))
            to_pil(r.images[row].numpy()).save(stem.with_suffix(".png"))
            print(f"{stem.name}: {len(chain.objects)} objects, {len(chain.errors)} parse issues")
    print(f"wrote {len(args.prompt) * args.num} samples to {out}")
    return 0


def _eval_metrics(args, protocol, categories: list[str], device):
    """The metric of each category: the benchmark's own models (random tiny ones with ``--tiny-metrics``), or
    the judge's rubric."""
    if protocol.name == "judge":
        from gotr1.cli.jobs import JudgeSettings
        from gotr1.cli.resolve import build_judge
        from gotr1.metrics.judge_rubric import JudgeRubricScore

        (judge_settings,) = _settings(args, JudgeSettings)
        rubric = JudgeRubricScore(build_judge(judge_settings))
        return {category: rubric for category in categories}
    return protocol.load_metrics(categories, device=args.metric_device or device, dtype=args.metric_dtype,
                                 tiny=args.tiny_metrics, blip_model=args.blip_model)


def _claim_eval_folder(out: Path, overwrite: bool):
    """The eval folder, claimed on rank 0 (a context manager). Resuming is eval's default: an earlier run's
    images and scores are kept, and the log says so."""
    from contextlib import nullcontext

    from gotr1.train.distributed import rank_and_world
    from gotr1.train.run_folder import claim_on_rank_zero, run_contents

    if not overwrite and rank_and_world()[0] == 0 and run_contents(out):
        print(f"gotr1 eval: {out} holds an earlier evaluation: resuming it (images already written and scores already "
              "in scores.jsonl are kept; --overwrite moves them aside and starts afresh)", file=sys.stderr)
    return claim_on_rank_zero(out, resume=not overwrite, overwrite=overwrite) or nullcontext()


def _cmd_eval(args: argparse.Namespace) -> int:
    from gotr1.eval.protocols import protocol as benchmark_protocol
    from gotr1.eval.runner import run_benchmark
    from gotr1.prompt_sets import read_prompts
    from gotr1.rollout import Sampling
    from gotr1.train.distributed import join_process_group, leave_process_group, local_device

    protocol = benchmark_protocol(args.benchmark, args.prompt_revision)
    if args.blip_model and protocol.name != "t2i-compbench":
        raise ValueError(f"--blip-model: {protocol.name} has no BLIP-VQA metric, got {args.blip_model!r}")
    (sampling,) = _settings(args, Sampling)
    categories = [c.strip() for c in (args.categories or ",".join(protocol.categories)).split(",") if c.strip()]
    if protocol.name == "judge" and args.images is None:
        categories = list(read_prompts(",".join(categories)))  # a prompt file's stem is its category
    else:
        protocol.check_categories(categories)
    if args.images is None and not args.model:
        raise ValueError("--model: give the policy to generate with, or --images to score an existing folder")
    join_process_group()
    with _claim_eval_folder(Path(args.out), args.overwrite):
        device = local_device()
        metrics = _eval_metrics(args, protocol, categories, device)
        model = processor = None
        if args.images is None:
            from gotr1.cli.resolve import load_any_policy

            model, processor = load_any_policy(args.model, device=device)
        result = run_benchmark(protocol, metrics, args.out, model=model, processor=processor, images=args.images,
                               categories=categories, limit=args.limit, per_prompt=args.images_per_prompt,
                               batch_size=args.batch_size, score_batch_size=args.score_batch_size,
                               sampling=sampling, progress=not args.no_progress,
                               tiny_metrics=args.tiny_metrics)
    leave_process_group()
    out = Path(args.out)
    if (out / "table.md").is_file():
        print((out / "table.md").read_text(encoding="utf-8"))
        print(f"wrote {out}/table.md, table.csv, scores.jsonl, summary.json and samples.png")
    for skipped in result.skipped:
        print(f"gotr1 eval: skipped {skipped['image']}: {skipped['error']}", file=sys.stderr)
    if result.not_scored:
        print(f"gotr1 eval: {result.not_scored} of {result.scored + result.not_scored} images not scored "
              "(left out of the means, null in scores.jsonl)", file=sys.stderr)
    if result.not_scored and not result.scored:
        print(f"gotr1 eval: error: the {protocol.name} metrics scored nothing"
              + ("; check --judge-url and the server" if protocol.name == "judge" else ""), file=sys.stderr)
        return 1
    return 0


def _cmd_convert_blip(args: argparse.Namespace) -> int:
    from gotr1.metrics.blip_convert import convert_blip

    out = convert_blip(args.original, args.out_dir, processor=args.processor)
    print(f"wrote {out}: score with gotr1 eval --benchmark t2i-compbench --blip-model {out} ...")
    return 0


def _cmd_import_official(args: argparse.Namespace) -> int:
    from gotr1.eval.official import compare_official, write_comparison
    from gotr1.eval.protocols import protocol as benchmark_protocol
    from gotr1.eval.runner import read_scores

    run = Path(args.scores or args.official)
    summary = run / "summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"--scores: no gotr1 evaluation in {run} (no summary.json); run gotr1 eval first")
    protocol = benchmark_protocol(json.loads(summary.read_text(encoding="utf-8"))["benchmark"])
    rows = compare_official(protocol, args.official, list(read_scores(run).values()))
    print(write_comparison(protocol, rows, run), end="")
    print(f"wrote {run}/official.md and official.json")
    return 0


EVAL_TOOLS = ("convert-blip", "import-official")
"""``gotr1 eval`` actions besides running a benchmark, parsed by :func:`build_eval_tools_parser`."""


def build_eval_tools_parser() -> argparse.ArgumentParser:
    """``gotr1 eval convert-blip ...`` and ``gotr1 eval import-official ...`` (``gotr1 eval`` runs a benchmark)."""
    parser = argparse.ArgumentParser(prog="gotr1 eval")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = sub.add_parser("convert-blip", help="the original BLIP VQA checkpoint as a transformers model at 480 px",
                             description="Convert Salesforce's original BLIP VQA .pth (model_base_vqa_capfilt_large"
                                         ".pth, what T2I-CompBench loads) to a transformers folder with its 480-px "
                                         "position table as it is; score with gotr1 eval --blip-model OUT_DIR.")
    convert.add_argument("original", metavar="ORIGINAL.pth", help="the original checkpoint")
    convert.add_argument("out_dir", metavar="OUT_DIR", help="folder to write")
    from gotr1.metrics.compbench import BlipVQAScore

    convert.add_argument("--processor", default=BlipVQAScore.DEFAULT_ID,
                         help="a transformers BLIP processor (hub id or folder) for the tokenizer and image processing "
                              f"(default: {BlipVQAScore.DEFAULT_ID})")
    convert.set_defaults(run=_cmd_convert_blip, command="eval convert-blip")
    official = sub.add_parser("import-official", help="the official scripts' results beside gotr1's, per category",
                              description="Read the official T2I-CompBench or GenEval scripts' output files for the "
                                          "images of a gotr1 evaluation and write official.md / official.json: both "
                                          "numbers per category, the difference, and a per-image comparison.")
    official.add_argument("official", metavar="DIR",
                          help="T2I-CompBench: the image folder the official scripts ran on (their annotation folders "
                               "inside each category folder); GenEval: results.jsonl or the folder holding it")
    official.add_argument("--scores", metavar="EVAL_DIR", default=None,
                          help="the gotr1 eval --out folder of the same images (default: DIR)")
    official.set_defaults(run=_cmd_import_official, command="eval import-official")
    _add_debug_option(convert, official)
    return parser


def _add_debug_option(*parsers: argparse.ArgumentParser) -> None:
    for parser in parsers:
        parser.add_argument("--debug", action="store_true",
                            help="show the traceback of a failure, not only its one line (also GOTR1_DEBUG=1)")


def _reward_entries(text: str):
    """``hps@cuda:1,pickscore`` -> model entries (name, device)."""
    from gotr1.rewards.compose import MODEL_REWARDS, ModelEntry

    entries = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, device = part.partition("@")
        if name not in MODEL_REWARDS:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(MODEL_REWARDS)}")
        entries.append(ModelEntry(name, device=device or None))
    if not entries:
        raise argparse.ArgumentTypeError("name at least one reward model")
    return entries


def _cmd_serve_rewards(args: argparse.Namespace) -> int:
    from gotr1.rewards.compose import load_reward_model
    from gotr1.rewards.remote import API_KEY_ENV
    from gotr1.rewards.server import RewardServer

    rewards = {entry.name: load_reward_model(entry, tiny=args.tiny) for entry in args.rewards}
    RewardServer(rewards, host=args.host, port=args.port, max_batch=args.max_batch, max_wait=args.max_wait,
                 max_pixels=args.max_pixels, api_key=args.api_key or os.environ.get(API_KEY_ENV),
                 insecure=args.insecure).serve_forever()
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from gotr1.train.convert import convert

    summary = convert(args.sources, args.out, source_format=args.source_format, prompt_field=args.prompt_field,
                      chain_field=args.chain_field, image_field=args.image_field, coord_field=args.coord_field,
                      shard_size=args.shard_size, progress=not args.no_progress, resume=args.resume,
                      overwrite=args.overwrite)
    rejected = {reason: entry["count"] for reason, entry in summary["rejected"].items()}
    print(f"{summary['records_in']} records in, {summary['written']} written to {len(summary['shards'])} shard(s) in "
          f"{args.out}; repaired {summary['repaired_records']} ({summary['repairs']}); rejected {rejected}")
    print(f"train on them: gotr1 sft --data {args.out} ... (summary: {Path(args.out) / 'summary.json'})")
    return 0


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    from gotr1.cli.config_io import add_config_options
    from gotr1.rollout import Sampling

    add_config_options(parser, Sampling, "sampling")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gotr1", description="GoT-R1 training system: reasoning-driven text-to-image.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    layout = sub.add_parser("layout", help="draw a chain's boxes and object names on a blank canvas",
                            description="Render the layout canvas of a GoT chain (the picture the spatial reward judges).")
    layout.add_argument("chain", nargs="?", metavar="CHAIN_TEXT_OR_FILE",
                        help="the chain text, or a file holding it (default: the example chain shipped with gotr1)")
    layout.add_argument("--out", required=True, help="PNG file to write")
    layout.add_argument("--size", type=_canvas_size, default=384, help="canvas side in pixels (default: 384)")
    layout.add_argument("--line-width", type=_positive_int, default=3, help="box outline width in pixels (default: 3)")
    layout.add_argument("--no-labels", action="store_true", help="draw the boxes without object names")
    layout.set_defaults(run=_cmd_layout)

    demo = sub.add_parser("demo", help="the whole method on a tiny model, offline on the CPU (the main job)",
                          description="VQ warm-up, synthetic GoT data, SFT, GRPO with rule rewards; prints a "
                                      "before/after table and writes reward_curve.png and samples.png.")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke test, not a result)")
    demo.add_argument("--overwrite", action="store_true",
                      help="move an earlier demo in --out aside (to OUT.overwritten-TIME) instead of refusing it")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--threads", type=int, default=None,
                      help="torch CPU threads (default: the cores this process may use, from its CPU affinity "
                           "and cgroup quota, never the momentary load); a seed and a thread count reproduce a "
                           "run bit for bit")
    demo.set_defaults(run=_cmd_demo)

    from gotr1.cli.config_io import add_config_options
    from gotr1.cli.jobs import GRPOJob, JudgeSettings, PolicySettings
    from gotr1.grpo.config import GRPOConfig
    from gotr1.train.config import SFTConfig

    for name, cls, job, run, what in (
        ("sft", SFTConfig, PolicySettings, _cmd_sft, "stage 1: supervised fine-tuning on GoT data"),
        ("grpo", GRPOConfig, GRPOJob, _cmd_grpo, "stage 2: GRPO with MLLM (or rule) rewards"),
    ):
        cmd = sub.add_parser(name, help=what, description=f"{what}. Run under torchrun for several GPUs (grpo).")
        cmd.add_argument("--config", help="YAML file of config fields (see configs/)")
        cmd.add_argument("--resume", metavar="DIR", help="continue from a checkpoint or run folder")
        add_config_options(cmd, job, f"{job.__name__} fields: what the command loads and builds")
        add_config_options(cmd, cls)
        cmd.set_defaults(run=run)

    gen = sub.add_parser("generate", help="write chains, layout canvases and images for prompts",
                         description="Generate GoT chains and images; per sample: .chain.txt, .layout.png, .png.")
    gen.add_argument("--model", required=True, help="policy: checkpoint folder, run folder, hub id or 'tiny'")
    gen.add_argument("--prompt", required=True, action="append", type=_prompt_text, help="a prompt (repeat for several)")
    gen.add_argument("--num", type=_positive_int, default=1, help="samples per prompt (default: 1)")
    gen.add_argument("--out", required=True, help="output folder")
    _add_sampling_options(gen)
    gen.set_defaults(run=_cmd_generate)

    ev = sub.add_parser("eval", help="T2I-CompBench or GenEval with their own metrics, or the judge's rubric",
                        description="Generate each benchmark's images (its protocol and official file layout), score "
                                    "them with its own metrics, and write table.md / table.csv beside the paper's "
                                    "rows, scores.jsonl and samples.png. Both phases resume; under torchrun the "
                                    "prompts are sharded over the ranks. Also: gotr1 eval convert-blip ORIGINAL.pth "
                                    "OUT_DIR and gotr1 eval import-official DIR (see their --help).")
    ev.add_argument("--benchmark", choices=("t2i-compbench", "geneval", "judge"), default="t2i-compbench",
                    help="t2i-compbench (BLIP-VQA, CLIPScore, detector spatial, 3-in-1), geneval (Mask2Former + "
                         "CLIP), or judge (the MLLM judge's prompt-image rubric) (default: t2i-compbench)")
    ev.add_argument("--model", help="policy: checkpoint folder, run folder, hub id or 'tiny'")
    ev.add_argument("--images", metavar="DIR", help="score the images of DIR (the benchmark's official layout) "
                                                    "instead of generating")
    ev.add_argument("--categories", "--prompts", dest="categories", default=None,
                    help="categories joined by commas (default: all of the benchmark's); for the judge also a "
                         "prompt file")
    ev.add_argument("--out", required=True, help="output folder; an earlier evaluation there is resumed (its images "
                                                 "and scores kept)")
    ev.add_argument("--overwrite", action="store_true",
                    help="move what --out holds aside (to OUT.overwritten-<time>) and start afresh")
    ev.add_argument("--images-per-prompt", "--num", dest="images_per_prompt", type=_positive_int, default=None,
                    help="images per prompt (default: the benchmark's protocol: 10 for t2i-compbench, 4 for "
                         "geneval, 1 for the judge)")
    ev.add_argument("--batch-size", type=_positive_int, default=8, help="prompts generated at once (default: 8)")
    ev.add_argument("--score-batch-size", type=_positive_int, default=16, help="images scored at once (default: 16)")
    ev.add_argument("--limit", type=_positive_int, default=None, help="first N prompts of each category (default: all)")
    ev.add_argument("--metric-device", default=None, help="device of the metric models (default: the policy's)")
    ev.add_argument("--metric-dtype", default=None, help="dtype of the metric models (default: float32)")
    ev.add_argument("--tiny-metrics", action="store_true",
                    help="random-weight tiny metric models (smoke tests offline; the numbers mean nothing, and no "
                         "published row is printed beside them)")
    from gotr1.prompt_sets import COMPBENCH_REVISIONS, DEFAULT_COMPBENCH_REVISION

    ev.add_argument("--prompt-revision", choices=tuple(COMPBENCH_REVISIONS), default=None,
                    help=f"T2I-CompBench prompt lists (default: {DEFAULT_COMPBENCH_REVISION}, the lists GoT-R1 "
                         "evaluated; 2025-09 changes 5 colour prompts)")
    ev.add_argument("--blip-model", metavar="PATH", default=None,
                    help="BLIP-VQA checkpoint for t2i-compbench, e.g. the original 480-px one converted by gotr1 eval "
                         "convert-blip (default: Salesforce/blip-vqa-capfilt-large, a 384-px conversion)")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_options(ev, JudgeSettings, "judge (--benchmark judge)")
    _add_sampling_options(ev)
    ev.set_defaults(run=_cmd_eval)

    from gotr1.rewards.score_requests import MAX_PIXELS

    serve = sub.add_parser("serve-rewards", help="host reward models over HTTP for training nodes (RemoteReward)",
                           description="Serve reward models on their own GPUs; concurrent requests are batched per "
                                       "model. Training reaches them with a reward entry's url (reward: {hps: {url: "
                                       "http://HOST:PORT}}). Ctrl-C stops.")
    serve.add_argument("--rewards", required=True, type=_reward_entries,
                       help="models joined by commas, each optionally @device: hps@cuda:1,pickscore@cuda:2")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8100, help="port (default: 8100)")
    serve.add_argument("--max-batch", type=_positive_int, default=32, help="most images per model call (default: 32)")
    serve.add_argument("--max-wait", type=float, default=0.01,
                       help="seconds a batch waits for more requests (default: 0.01)")
    serve.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS,
                       help=f"decoded pixels one request may hold, and all requests at once; a request over it "
                            f"answers 413 (default: {MAX_PIXELS}, ~200 MB of RGB)")
    serve.add_argument("--api-key", default=None,
                       help="answer only requests with 'Authorization: Bearer KEY' (default: $GOTR1_REWARD_API_KEY, "
                            "which keeps the key out of the process list); required beyond the loopback interface")
    serve.add_argument("--insecure", action="store_true",
                       help="listen beyond the loopback interface without an API key (a network you trust)")
    serve.add_argument("--tiny", action="store_true", help="random-weight tiny models (smoke tests offline)")
    serve.set_defaults(run=_cmd_serve_rewards)

    data = sub.add_parser("data", help="prepare training data (convert published GoT datasets)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    from gotr1.train.convert import FORMATS

    conv = data_sub.add_parser("convert", help="GoT records (json, jsonl, parquet, tar shards) -> gotr1 SFT shards",
                               description="Convert GoT datasets to gotr1's SFT JSONL shards + images: chains rewritten "
                                           "to GoT-R1's tags (each repair counted), validated strictly, rejects counted "
                                           "with file:line in summary.json. Streaming, idempotent and resumable.")
    conv.add_argument("sources", nargs="+", help="input files (.json, .jsonl, .parquet, .tar)")
    conv.add_argument("--from", dest="source_format", required=True, choices=FORMATS,
                      help="got: GoT model text (Qwen box tags, a colour after each box); got-coord: placeholders plus "
                           "a coordinate column (OmniEdit-GoT); jsonl / parquet / webdataset: by file type")
    conv.add_argument("--out", required=True, help="output folder (shards, images/, summary.json)")
    conv.add_argument("--prompt-field", default=None, help="record field of the prompt (default: prompt, caption, txt)")
    conv.add_argument("--chain-field", default=None, help="record field of the chain (default: got, chain, cot)")
    conv.add_argument("--image-field", default=None, help="record field of the image (default: image, jpg, png, ...)")
    conv.add_argument("--coord-field", default=None, help="got-coord: field of the placeholder coordinates (default: coord)")
    conv.add_argument("--shard-size", type=_positive_int, default=10000, help="rows per shard (default: 10000)")
    conv.add_argument("--resume", action="store_true", help="continue the conversion --out holds (same sources)")
    conv.add_argument("--overwrite", action="store_true",
                      help="move what --out holds aside (to OUT.overwritten-<time>) and start afresh")
    conv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    conv.set_defaults(run=_cmd_data_convert)

    tune = sub.add_parser("tune-kernels", help="time every kernel config on this GPU and store the best",
                          description="Same as python -m gotr1.kernels.tune: per (GPU, kernel, shape bucket) best "
                                      "launch configs, written to ~/.cache/gotr1/kernels.json ($GOTR1_KERNEL_CONFIGS); "
                                      "training reads them and never tunes. Options: --shapes image,chain --out FILE "
                                      "--hidden 2048 --rows 64.", add_help=False)
    _add_debug_option(*sub.choices.values(), conv)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tune-kernels"]:  # its options are the tuner's own
        from gotr1.kernels.tune import main as tune

        return tune(argv[1:])
    if argv[:1] == ["eval"] and argv[1:2] and argv[1] in EVAL_TOOLS:  # actions beside gotr1 eval's own options
        args = build_eval_tools_parser().parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (_Stopped, ValueError, TypeError, OSError) as err:
        if args.debug or os.environ.get("GOTR1_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"gotr1 {args.command}: {'stopped' if isinstance(err, _Stopped) else 'error'}: {err}", file=sys.stderr)
        return _exit_status(err)


def _exit_status(err: Exception) -> int:
    if isinstance(err, _Stopped):
        return EXIT_OUTAGE
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_DISK_FULL
    return EXIT_BAD_INPUT

