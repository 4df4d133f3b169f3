"""Progress bars that stay readable in a log file as well as in a terminal.

tqdm redraws its line up to ten times a second. In a terminal that is a live bar; redirected to a file it
is hundreds of kilobytes of carriage returns. Off a terminal the bars here redraw at most every 30 s, so a
log keeps a short record of progress instead.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, *, enabled: bool = True, file=None, **kwargs) -> tqdm:
    """A tqdm bar (``enabled=False`` hides it) that redraws every 0.1 s on a terminal, every 30 s elsewhere."""
    stream = file if file is not None else sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(iterable, disable=not enabled, file=stream, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else LOG_INTERVAL_S, **kwargs)
