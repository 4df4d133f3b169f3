"""Progress bars: live in a terminal, a few lines in a log file."""

import io

from gotr1.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_a_bar_that_redraws_rarely_and_ends_with_the_total():
    log = io.StringIO()
    for _ in progress_bar(range(5000), desc="sft", file=log):
        pass
    assert log.getvalue().count("\r") <= 3  # opened, (at most one refresh in a fast loop), closed
    assert "5000/5000" in log.getvalue()
    assert progress_bar(range(1), file=io.StringIO()).mininterval == LOG_INTERVAL_S


def test_a_terminal_gets_a_live_bar_and_disabled_bars_write_nothing():
    assert progress_bar(range(1), file=_Terminal()).mininterval == 0.1
    quiet = io.StringIO()
    for _ in progress_bar(range(10), enabled=False, file=quiet):
        pass
    assert quiet.getvalue() == ""
