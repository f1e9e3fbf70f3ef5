"""What the benchmarks share: where the anchor tools are, and how results are printed."""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TOOL = ROOT / ".tools" / "bin" / "estargz-ref"


def child_peak_rss_mb(usage: resource.struct_rusage) -> float:
    """Peak RSS of a waited-for child, in MB (Linux reports ru_maxrss in KiB)."""
    return usage.ru_maxrss * 1024 / 1e6


def require(path_or_name: str | Path) -> str:
    found = str(path_or_name) if Path(path_or_name).exists() else shutil.which(str(path_or_name))
    if found is None:
        raise SystemExit(f"{path_or_name} is missing: run ./dev setup")
    return found


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
