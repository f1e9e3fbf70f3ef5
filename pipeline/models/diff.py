"""What a change to the models file asks a build to do: entries added, moved to another revision, given
another file selection, or removed, compared by image (repository and tag).

A pull request's preview needs no store (and so no secret): whatever the merge's base published, the
entries the pull request changes are what its merge builds.

Example::

    for change in changed_entries(load_models("base.yaml"), load_models("models/models.yaml")):
        print(change.kind, change.model.repository, change.model.tag)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.models.file import ModelSpec

Kind = Literal["added", "revision", "selection", "removed"]


@dataclass(frozen=True)
class EntryChange:
    kind: Kind
    model: ModelSpec  # the entry as it is now (as it was, when removed)
    before: ModelSpec | None = None  # the entry in the base file, when there was one

    @property
    def builds(self) -> bool:
        return self.kind != "removed"

    def describe(self) -> str:
        if self.kind == "revision" and self.before is not None:
            return f"revision {self.before.revision[:12]} → {self.model.revision[:12]}"
        if self.kind == "selection" and self.before is not None:
            return f"files: include {list(self.before.include)} exclude {list(self.before.exclude)} → " + (
                f"include {list(self.model.include)} exclude {list(self.model.exclude)}"
            )
        return self.kind


def changed_entries(base: Sequence[ModelSpec], head: Sequence[ModelSpec]) -> list[EntryChange]:
    """The entries of ``head`` that differ from ``base`` (in ``head``'s order), then those ``head`` removed."""
    before = {(m.repository, m.tag): m for m in base}
    now = {(m.repository, m.tag) for m in head}
    changes = []
    for model in head:
        old = before.get((model.repository, model.tag))
        if old is None:
            changes.append(EntryChange("added", model))
        elif old.revision != model.revision:
            changes.append(EntryChange("revision", model, old))
        elif (old.include, old.exclude) != (model.include, model.exclude):
            changes.append(EntryChange("selection", model, old))
    changes += [EntryChange("removed", m) for key, m in before.items() if key not in now]
    return changes
