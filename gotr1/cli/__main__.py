"""``python -m gotr1.cli``: the ``gotr1`` command (what ``torchrun -m gotr1.cli grpo ...`` runs)."""

import sys

from gotr1.cli.commands import main

sys.exit(main())
