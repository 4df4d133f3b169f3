"""Write ``csrc/font.h``, the rasterizer's bitmap font, from the glyph drawings below.

The glyphs are gotr1's own design (Apache-2.0, like the project): printable ASCII 32..126 and a hollow
box (PH) that the rasterizer draws for every other character, each 5 columns by 9 rows: 7 rows down to
the baseline and 2 for the descenders of g, j, p, q, y. Each band lists the glyph names (SP is the
space) above their drawings, '#' inked and '.' blank, two spaces between glyphs.

Run ``python csrc/gen_font.py`` after editing a drawing and commit both files;
``python csrc/gen_font.py --check`` exits 1 when ``font.h`` is stale (the tests run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 9
NAMES = ["SP"] + [chr(c) for c in range(33, 127)] + ["PH"]

DRAWINGS = r"""
SP     !      "      #      $      %      &      '      (      )      *      +
.....  ..#..  .#.#.  .#.#.  ..#..  ##...  .##..  ..#..  ...#.  .#...  .....  .....
.....  ..#..  .#.#.  .#.#.  .####  ##..#  #..#.  ..#..  ..#..  ..#..  ..#..  ..#..
.....  ..#..  .....  #####  #.#..  ...#.  #.#..  .....  .#...  ...#.  #.#.#  ..#..
.....  ..#..  .....  .#.#.  .###.  ..#..  .#...  .....  .#...  ...#.  .###.  #####
.....  ..#..  .....  #####  ..#.#  .#...  #.#.#  .....  .#...  ...#.  #.#.#  ..#..
.....  .....  .....  .#.#.  ####.  #..##  #..#.  .....  ..#..  ..#..  ..#..  ..#..
.....  ..#..  .....  .#.#.  ..#..  ...##  .##.#  .....  ...#.  .#...  .....  .....
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....

,      -      .      /      0      1      2      3      4      5      6      7
.....  .....  .....  .....  .###.  ..#..  .###.  #####  ...#.  #####  ..##.  #####
.....  .....  .....  ....#  #...#  .##..  #...#  ...#.  ..##.  #....  .#...  ....#
.....  .....  .....  ...#.  #..##  ..#..  ....#  ..#..  .#.#.  ####.  #....  ...#.
.....  #####  .....  ..#..  #.#.#  ..#..  ...#.  ...#.  #..#.  ....#  ####.  ..#..
.....  .....  .....  .#...  ##..#  ..#..  ..#..  ....#  #####  ....#  #...#  .#...
.##..  .....  .##..  #....  #...#  ..#..  .#...  #...#  ...#.  #...#  #...#  .#...
.##..  .....  .##..  .....  .###.  .###.  #####  .###.  ...#.  .###.  .###.  .#...
..#..  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....
.#...  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....

8      9      :      ;      <      =      >      ?      @      A      B      C
.###.  .###.  .....  .....  ...#.  .....  .#...  .###.  .###.  .###.  ####.  .###.
#...#  #...#  .##..  .##..  ..#..  .....  ..#..  #...#  #...#  #...#  #...#  #...#
#...#  #...#  .##..  .##..  .#...  #####  ...#.  ....#  ....#  #...#  #...#  #....
.###.  .####  .....  .....  #....  .....  ....#  ...#.  .##.#  #####  ####.  #....
#...#  ....#  .##..  .....  .#...  #####  ...#.  ..#..  #.#.#  #...#  #...#  #....
#...#  ...#.  .##..  .##..  ..#..  .....  ..#..  .....  #.#.#  #...#  #...#  #...#
.###.  .##..  .....  .##..  ...#.  .....  .#...  ..#..  .###.  #...#  ####.  .###.
.....  .....  .....  ..#..  .....  .....  .....  .....  .....  .....  .....  .....
.....  .....  .....  .#...  .....  .....  .....  .....  .....  .....  .....  .....

D      E      F      G      H      I      J      K      L      M      N      O
###..  #####  #####  .###.  #...#  .###.  ..###  #...#  #....  #...#  #...#  .###.
#..#.  #....  #....  #...#  #...#  ..#..  ...#.  #..#.  #....  ##.##  #...#  #...#
#...#  #....  #....  #....  #...#  ..#..  ...#.  #.#..  #....  #.#.#  ##..#  #...#
#...#  ####.  ####.  #.###  #####  ..#..  ...#.  ##...  #....  #.#.#  #.#.#  #...#
#...#  #....  #....  #...#  #...#  ..#..  ...#.  #.#..  #....  #...#  #..##  #...#
#..#.  #....  #....  #...#  #...#  ..#..  #..#.  #..#.  #....  #...#  #...#  #...#
###..  #####  #....  .####  #...#  .###.  .##..  #...#  #####  #...#  #...#  .###.
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....

P      Q      R      S      T      U      V      W      X      Y      Z      [
####.  .###.  ####.  .####  #####  #...#  #...#  #...#  #...#  #...#  #####  .###.
#...#  #...#  #...#  #....  ..#..  #...#  #...#  #...#  #...#  #...#  ....#  .#...
#...#  #...#  #...#  #....  ..#..  #...#  #...#  #...#  .#.#.  .#.#.  ...#.  .#...
####.  #...#  ####.  .###.  ..#..  #...#  #...#  #.#.#  ..#..  ..#..  ..#..  .#...
#....  #.#.#  #.#..  ....#  ..#..  #...#  #...#  #.#.#  .#.#.  ..#..  .#...  .#...
#....  #..#.  #..#.  ....#  ..#..  #...#  .#.#.  #.#.#  #...#  ..#..  #....  .#...
#....  .##.#  #...#  ####.  ..#..  .###.  ..#..  .#.#.  #...#  ..#..  #####  .###.
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....

\      ]      ^      _      `      a      b      c      d      e      f      g
.....  .###.  ..#..  .....  .#...  .....  #....  .....  ....#  .....  ..##.  .....
#....  ...#.  .#.#.  .....  ..#..  .....  #....  .....  ....#  .....  .#..#  .....
.#...  ...#.  #...#  .....  .....  .###.  #.##.  .###.  .##.#  .###.  .#...  .####
..#..  ...#.  .....  .....  .....  ....#  ##..#  #....  #..##  #...#  ###..  #...#
...#.  ...#.  .....  .....  .....  .####  #...#  #....  #...#  #####  .#...  #...#
....#  ...#.  .....  .....  .....  #...#  #...#  #...#  #...#  #....  .#...  #...#
.....  .###.  .....  #####  .....  .####  ####.  .###.  .####  .###.  .#...  .####
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  ....#
.....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .....  .###.

h      i      j      k      l      m      n      o      p      q      r      s
#....  ..#..  ...#.  #....  .##..  .....  .....  .....  .....  .....  .....  .....
#....  .....  .....  #....  ..#..  .....  .....  .....  .....  .....  .....  .....
#.##.  .##..  ..##.  #..#.  ..#..  ##.#.  #.##.  .###.  ####.  .####  #.##.  .###.
##..#  ..#..  ...#.  #.#..  ..#..  #.#.#  ##..#  #...#  #...#  #...#  ##..#  #....
#...#  ..#..  ...#.  ##...  ..#..  #.#.#  #...#  #...#  #...#  #...#  #....  .###.
#...#  ..#..  ...#.  #.#..  ..#..  #...#  #...#  #...#  #...#  #...#  #....  ....#
#...#  .###.  ...#.  #..#.  .###.  #...#  #...#  .###.  ####.  .####  #....  ####.
.....  .....  #..#.  .....  .....  .....  .....  .....  #....  ....#  .....  .....
.....  .....  .##..  .....  .....  .....  .....  .....  #....  ....#  .....  .....

t      u      v      w      x      y      z      {      |      }      ~      PH
.#...  .....  .....  .....  .....  .....  .....  ...#.  ..#..  .#...  .....  #####
.#...  .....  .....  .....  .....  .....  .....  ..#..  ..#..  ..#..  .....  #...#
###..  #...#  #...#  #...#  #...#  #...#  #####  ..#..  ..#..  ..#..  .#...  #...#
.#...  #...#  #...#  #...#  .#.#.  #...#  ...#.  .#...  ..#..  ...#.  #.#.#  #...#
.#...  #...#  #...#  #.#.#  ..#..  #...#  ..#..  ..#..  ..#..  ..#..  ...#.  #...#
.#..#  #..##  .#.#.  #.#.#  .#.#.  #...#  .#...  ..#..  ..#..  ..#..  .....  #...#
..##.  .##.#  ..#..  .#.#.  #...#  .####  #####  ...#.  ..#..  .#...  .....  #####
.....  .....  .....  .....  .....  ....#  .....  .....  .....  .....  .....  .....
.....  .....  .....  .....  .....  .###.  .....  .....  .....  .....  .....  .....
"""


def parse(drawings: str = DRAWINGS) -> list[list[str]]:
    """The glyphs in ``NAMES`` order, each as ``GLYPH_HEIGHT`` rows of ``GLYPH_WIDTH`` '#'/'.' characters."""
    lines = [line.rstrip() for line in drawings.strip("\n").split("\n")]
    names, glyphs = [], []
    for start in range(0, len(lines), GLYPH_HEIGHT + 2):
        band = lines[start : start + GLYPH_HEIGHT + 1]
        header = band[0].split()
        rows = [row.split("  ") for row in band[1:]]
        for row in rows:
            if len(row) != len(header) or any(len(c) != GLYPH_WIDTH or set(c) - set("#.") for c in row):
                raise ValueError(f"malformed drawing row under {header}: {row}")
        names += header
        glyphs += [[row[i] for row in rows] for i in range(len(header))]
    if names != NAMES:
        raise ValueError(f"glyphs must be drawn in the order {NAMES}, got {names}")
    return glyphs


def render(glyphs: list[list[str]]) -> str:
    """The text of ``font.h``: one row bitmask per glyph row, leftmost column in the highest bit."""
    body = []
    for name, rows in zip(NAMES, glyphs):
        masks = ", ".join(f"0x{int(r.replace('#', '1').replace('.', '0'), 2):02x}" for r in rows)
        body.append(f"    {{{masks}}},  // {name!r}")  # repr: a trailing backslash would splice lines
    return "\n".join(
        [
            "// Generated by csrc/gen_font.py from its glyph drawings: edit those and rerun it, not this file.",
            "// The glyphs are gotr1's own design, under the project's licence (Apache-2.0).",
            "#pragma once",
            "",
            "#include <cstdint>",
            "",
            "namespace gotr1::canvas::font {",
            "",
            f"constexpr int kGlyphWidth = {GLYPH_WIDTH};",
            f"constexpr int kGlyphHeight = {GLYPH_HEIGHT};  // 7 rows to the baseline, 2 for descenders",
            "constexpr int kFirstPrintable = 32;",
            "constexpr int kLastPrintable = 126;",
            f"constexpr int kPlaceholder = {len(NAMES) - 1};  // the hollow box drawn for any other character",
            "",
            "// kGlyphs[index][row] has bit (kGlyphWidth - 1 - column) set where the glyph is inked;",
            "// index is the character code minus kFirstPrintable, or kPlaceholder.",
            f"constexpr std::uint8_t kGlyphs[{len(NAMES)}][kGlyphHeight] = {{",
            *body,
            "};",
            "",
            "}  // namespace gotr1::canvas::font",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if font.h differs from the drawings")
    args = parser.parse_args()
    target = Path(__file__).with_name("font.h")
    text = render(parse())
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
