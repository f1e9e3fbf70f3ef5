"""``modelyard update``: move each entry's pinned ``sha`` to where its branch is now on the Hub.

The models file is written and reviewed by people, so an update changes nothing but the shas that
move: every comment, blank line, quote, indent and line ending stays byte for byte. The YAML node marks
give the exact span of each ``sha`` value and only those spans are replaced. (A round-trip YAML library
re-emits the whole document, which is close to the original but not byte-exact for every file a person
writes: flow lists get re-spaced, long lines re-wrapped.)

An entry follows its ``branch`` key, or the repository's default branch. A gated, private or missing
repository, or a missing branch, is reported and its entry left as it is: the registry publishes only
what anyone may download, and a pin nobody can verify is better left for a person to look at.

Example::

    report = update_models_file("models/models.yaml", HubClient().head)
    for change in report.changes:
        print(change.model.hf_id, change.status, change.revision)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from pipeline.errors import (
    GatedModelError,
    HubError,
    MissingRepoError,
    MissingRevisionError,
    ModelsFileError,
    ModelyardError,
)
from pipeline.files import replace_file
from pipeline.hub.client import RepoHead
from pipeline.models.file import ModelSpec, parse_models

LOOKUP_THREADS = 8
Status = Literal["moved", "current", "gated", "private", "missing", "failed"]
LEFT: frozenset[Status] = frozenset({"gated", "private", "missing"})  # reported, left as they are
HeadLookup = Callable[[str, "str | None"], RepoHead]


@dataclass(frozen=True)
class PinnedSha:
    """Where one entry's ``sha`` value sits in the text: ``text[start:end]`` is the 40 hex characters."""

    model: ModelSpec
    start: int
    end: int
    plain: bool = True  # unquoted in the text


@dataclass(frozen=True)
class Change:
    """What the Hub says about one entry, and what the update does with it."""

    model: ModelSpec
    status: Status
    revision: str | None = None  # where its branch is now, when the Hub said
    detail: str = ""  # why an entry was left or failed

    @property
    def branch(self) -> str:
        return self.model.branch or "default branch"


@dataclass(frozen=True)
class UpdateReport:
    path: str
    changes: list[Change]
    written: bool  # whether the file was rewritten (something moved and it was not a dry run)

    def count(self, *statuses: Status) -> int:
        return sum(change.status in statuses for change in self.changes)

    @property
    def moved(self) -> list[Change]:
        return [change for change in self.changes if change.status == "moved"]

    def summary(self) -> str:
        left = ", ".join(f"{self.count(s)} {s}" for s in sorted(LEFT) if self.count(s))
        parts = [f"{self.count('moved')} moved", f"{self.count('current')} current"]
        parts.append(f"{self.count(*LEFT)} left as they are ({left})" if left else "0 left as they are")
        parts.append(f"{self.count('failed')} failed")
        return ", ".join(parts)


def pinned_shas(text: str, filename: str = "models.yaml") -> list[PinnedSha]:
    """Every entry of a valid models file with the span of its sha; raise ModelsFileError if it is invalid."""
    models = parse_models(text, filename)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)  # parse_models checked the structure
    (entries,) = (value for key, value in root.value if key.value == "models")
    pins = []
    for model, entry in zip(models, entries.value, strict=True):
        (node,) = (value for key, value in entry.value if key.value == "sha")
        start, end = node.start_mark.index, node.end_mark.index
        plain = node.style not in ("'", '"')
        if not plain:
            start, end = start + 1, end - 1  # a 40-hex sha needs no escapes: the quotes hold it verbatim
        if text[start:end] != model.revision:
            raise ModelyardError(f"{model.source}: cannot locate the sha of {model.hf_id} in the text")
        pins.append(PinnedSha(model, start, end, plain))
    return pins


def replace_shas(text: str, pins: Sequence[PinnedSha], changes: Sequence[Change]) -> str:
    """The text with the sha of each moved entry replaced by its new revision, and nothing else changed."""
    new = {change.model: change.revision for change in changes if change.status == "moved" and change.revision}
    pieces, position = [], 0
    for pin in sorted(pins, key=lambda p: p.start):
        revision = new.get(pin.model)
        if revision is not None:
            if pin.plain and revision.isdigit():
                revision = f"'{revision}'"  # unquoted, an all-digit sha would read back as a number
            pieces += [text[position : pin.start], revision]
            position = pin.end
    return "".join([*pieces, text[position:]])


def check_heads(
    models: Sequence[ModelSpec], head: HeadLookup, on_done: Callable[[], None] | None = None
) -> list[Change]:
    """Ask the Hub where each model's branch is (once per repository and branch, in parallel); a Change each."""
    keys = list(dict.fromkeys((model.hf_id.lower(), model.branch) for model in models))
    hf_ids = {(model.hf_id.lower(), model.branch): model.hf_id for model in models}

    def look_up(key: tuple[str, str | None]) -> RepoHead | HubError:
        try:
            return head(hf_ids[key], key[1])
        except HubError as err:
            return err
        finally:
            if on_done is not None:
                on_done()

    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="hub-head") as pool:
        answers = dict(zip(keys, pool.map(look_up, keys), strict=True))
    return [classify(model, answers[(model.hf_id.lower(), model.branch)]) for model in models]


def classify(model: ModelSpec, answer: RepoHead | HubError) -> Change:
    """What to do with an entry, given the Hub's answer about its branch."""
    if isinstance(answer, GatedModelError):
        return Change(model, "gated", detail=str(answer))
    if isinstance(answer, MissingRevisionError):
        return Change(model, "missing", detail=f"{model.hf_id} has no branch {model.branch!r} on the Hub")
    if isinstance(answer, MissingRepoError):
        return Change(model, "missing", detail=str(answer))
    if isinstance(answer, HubError):
        return Change(model, "failed", detail=str(answer))
    if answer.private:
        return Change(model, "private", answer.revision, "private on the Hub: the registry publishes public models")
    if answer.gated:
        return Change(model, "gated", answer.revision, "gated on the Hub: its files need an accepted token")
    if answer.revision == model.revision:
        return Change(model, "current", answer.revision)
    return Change(model, "moved", answer.revision)


def update_models_file(
    path: str | Path,
    head: HeadLookup,
    only: Collection[ModelSpec] | None = None,
    dry_run: bool = False,
    on_done: Callable[[], None] | None = None,
) -> UpdateReport:
    """Move the shas of the file's entries (or of ``only`` those) to their branch heads; rewrite it if any moved.

    ``head(hf_id, branch)`` answers where a branch is (:meth:`HubClient.head`). The file is replaced
    atomically, so a reader sees the old file or the new one, and an interrupted update changes nothing.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelsFileError([f"{path}: cannot read: {err.strerror}"]) from err
    try:
        text = data.decode("utf-8")  # not read_text: it would translate CRLF line endings
    except UnicodeDecodeError as err:
        raise ModelsFileError([f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"]) from err
    pins = pinned_shas(text, str(path))
    chosen = [pin.model for pin in pins if only is None or pin.model in only]
    changes = check_heads(chosen, head, on_done)
    moved = any(change.status == "moved" for change in changes)
    if moved and not dry_run:
        replace_file(path, replace_shas(text, pins, changes).encode("utf-8"))
    return UpdateReport(str(path), changes, written=moved and not dry_run)
