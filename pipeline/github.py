"""What a GitHub Actions step reads from a command: workflow commands and Markdown for job summaries.

A line ``::error file=F,line=N,title=T::message`` on stdout becomes an annotation on line N of F in the
pull request's diff; Markdown appended to ``$GITHUB_STEP_SUMMARY`` shows on the run's page. Both are
plain text, so every modelyard command can produce them and tests can read them.

Example::

    print(annotation("error", "expected 40 lowercase hex", file="models/models.yaml", line=12, title="sha"))
    print(markdown_table(["model", "size"], [["gpt2", "548 MB"]], align="lr"))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Level = Literal["error", "warning", "notice"]
_PROBLEM = re.compile(r"(?P<file>[^:\n]+?):(?P<line>\d+): (?:(?P<title>[^:\n]+): )?(?P<message>.*)", re.S)


def escape_data(text: str) -> str:
    """A workflow command's message: '%', CR and LF are its only special characters."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (file, title): ':' and ',' separate properties, so escape them too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(
    level: Level, message: str, *, file: str | None = None, line: int | None = None, title: str | None = None
) -> str:
    """One workflow command line that annotates ``file`` at ``line`` (or the run, without a file)."""
    properties = [
        f"{key}={escape_property(str(value))}"
        for key, value in (("file", file), ("line", line), ("title", title))
        if value is not None
    ]
    return (
        f"::{level} {','.join(properties)}::{escape_data(message)}"
        if properties
        else f"::{level}::{escape_data(message)}"
    )


def problem_annotation(problem: str, level: Level = "error") -> str:
    """An annotation from a ``file:line: field: message`` problem (what models-file validation reports)."""
    match = _PROBLEM.fullmatch(problem)
    if match is None:
        return annotation(level, problem)
    return annotation(
        level, match["message"], file=match["file"], line=int(match["line"]), title=match["title"] or None
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table; ``align`` has one letter per column: l(eft), r(ight) or c(enter)."""
    rule = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = [
        _row(headers),
        _row([rule[align[i]] if i < len(align) else "---" for i in range(len(headers))]),
        *(_row(row) for row in rows),
    ]
    return "\n".join(lines)


def size_text(size: int) -> str:
    """``548.1 MB``, ``12.35 GB``: decimal units, as the Hub shows download sizes."""
    return f"{size / 1e6:,.1f} MB" if size < 10**9 else f"{size / 1e9:,.2f} GB"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    """A table cell: a '|' would end it and a newline would end the table."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
