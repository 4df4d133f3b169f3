"""Both test folders (``tests/``, ``benchmarks/``) import the *installed* gotr1.

``python -m pytest`` puts the current folder on ``sys.path``; from the repository root that would shadow the
installed package with the bare source tree, which refuses to import (its kernels and compiled canvas join
the package only at install time). The repository root is taken off ``sys.path`` before any test module
imports gotr1; an editable install is unaffected (its import hook maps the tree itself).
"""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT]
