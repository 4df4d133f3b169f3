"""The ``gotr1`` command line (:mod:`gotr1.cli.commands`), the settings only it reads (:mod:`gotr1.cli.jobs`),
YAML and option mapping (:mod:`gotr1.cli.config_io`) and name resolution (:mod:`gotr1.cli.resolve`)."""

from gotr1.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
