"""The ``gotr1`` command line: one subcommand per job, each documented by ``--help``.

``gotr1 layout [CHAIN_TEXT_OR_FILE] --out layout.png`` draws what a model wrote: the chain's boxes and
object names on a blank canvas, the same picture the spatial reward shows the judge. Without a chain it
draws the example chain shipped with the package.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gotr1", description="GoT-R1 training system: reasoning-driven text-to-image.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    layout = sub.add_parser("layout", help="draw a chain's boxes and object names on a blank canvas",
                            description="Render the layout canvas of a GoT chain (the picture the spatial reward judges).")
    layout.add_argument("chain", nargs="?", metavar="CHAIN_TEXT_OR_FILE",
                        help="the chain text, or a file holding it (default: the example chain shipped with gotr1)")
    layout.add_argument("--out", required=True, help="PNG file to write")
    layout.add_argument("--size", type=_positive_int, default=384, help="canvas side in pixels (default: 384)")
    layout.add_argument("--line-width", type=_positive_int, default=3, help="box outline width in pixels (default: 3)")
    layout.add_argument("--no-labels", action="store_true", help="draw the boxes without object names")
    layout.set_defaults(run=_cmd_layout)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"gotr1 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
