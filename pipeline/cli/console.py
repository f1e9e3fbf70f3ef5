"""What every subcommand shares: the consoles, progress bars, and common options.

Messages and progress go to stderr (``err``), results to stdout (``out``), so a pipe gets only results.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pipeline.store import DEFAULT_STORE, STORE_HELP

DEFAULT_MODELS_FILE = "models/models.yaml"
FORMATTER = argparse.RawDescriptionHelpFormatter

# Piped output (CI logs) gets a wide page rather than rich's 80 columns, so digests stay on one line.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


def byte_progress(description: str, total: int) -> Progress:
    """A progress bar over bytes, with rate and time left, on stderr."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    progress.add_task(description, total=total)
    return progress


def megabytes_per_second(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 1e-9) / 1e6:.0f} MB/s"


def duration(text: str) -> float:
    """Seconds from ``90s``, ``30m``, ``24h`` or ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return float(number) * units[unit]


def add_store_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
