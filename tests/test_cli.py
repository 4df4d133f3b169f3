"""The gotr1 command line: `gotr1 layout` on the shipped example, on text and files, and its errors."""

import subprocess
import sys

import numpy as np
from PIL import Image

from gotr1.chain import parse_chain
from gotr1.cli import example_chain, main
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
    run = lambda *args: subprocess.run([sys.executable, "-m", "gotr1.cli", *args], capture_output=True, text=True)
    ok = run("layout", "a <|obj_start|>cup<|obj_end|> <|box_start|>(0,0),(500,500)<|box_end|>", "--out", str(tmp_path / "x.png"))
    assert ok.returncode == 0 and (tmp_path / "x.png").is_file()
    bad = run("layout", "--out", str(tmp_path / "y.png"), "--size", "0")
    assert bad.returncode == 2 and "--size" in bad.stderr and "positive integer" in bad.stderr
    missing = run("layout")
    assert missing.returncode == 2 and "--out" in missing.stderr
