"""What the site knows about each model: its catalog record, its place in models.yaml, its last failure.

Pure: records and specs in, :class:`ModelEntry` values out. Records are read defensively: a record
written before a field existed, or holding a value of the wrong type, renders with that field
missing rather than breaking the site.

Example::

    entries = catalog_entries(records={"gpt2": record}, specs=load_models("models/models.yaml"), failures={})
    [(e.name, e.status) for e in entries]     # [('gpt2', 'published'), ('bert-base-uncased', 'not-built'), ...]
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.models.file import ModelSpec
from pipeline.site.card import split_front_matter

Status = Literal["published", "failed", "not-built"]
HUB_URL = "https://huggingface.co"
STATUS_LABELS: dict[Status, str] = {"published": "published", "failed": "failed", "not-built": "not yet built"}


@dataclass(frozen=True)
class ModelFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PlatformManifest:
    platform: str
    digest: str


@dataclass(frozen=True)
class OtherFormat:
    """The same model in another format (ModelKit, ModelPack): a manifest over the one stored layer."""

    name: str  # "modelkit", "modelpack"
    digest: str
    artifact_type: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """The last failed build of a model (the store's ``failures/<name>.json``)."""

    revision: str
    error: str
    failed_at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class ModelEntry:
    """One model as the pages show it. Only ``name`` and ``status`` are always known."""

    name: str  # the OCI repository name: also the page's path
    status: Status
    hf_id: str = ""
    revision: str = ""
    tags: tuple[str, ...] = ()
    task: str = ""
    library: str = ""
    license: str = ""
    languages: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    gated: bool = False
    parameters: int | None = None
    tensor_types: tuple[tuple[str, int], ...] = ()
    downloads: int | None = None
    likes: int | None = None
    total_size: int | None = None
    files: tuple[ModelFile, ...] = ()
    index_digest: str = ""
    manifests: tuple[PlatformManifest, ...] = ()
    platforms: tuple[str, ...] = ()
    layer_digest: str = ""
    layer_size: int | None = None
    toc_digest: str = ""
    diff_id: str = ""
    format_version: str = ""
    built_at: str = ""  # ISO 8601 UTC: when the catalog record was written (``published_at``, from the store)
    card: str = ""  # the card's Markdown, front matter removed
    front_matter: dict[str, Any] = field(default_factory=dict)
    formats: tuple[OtherFormat, ...] = ()
    failure: Failure | None = None
    record: Mapping[str, Any] = field(default_factory=dict)  # the catalog record as stored, for the JSON API

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def hub_url(self) -> str:
        return f"{HUB_URL}/{self.hf_id or self.name}"

    @property
    def hub_revision_url(self) -> str:
        return f"{self.hub_url}/tree/{self.revision}" if self.revision else self.hub_url

    @property
    def tag(self) -> str:
        """The tag snippets use: the first one published that is not the revision (``latest`` usually)."""
        named = [t for t in self.tags if t != self.revision]
        return named[0] if named else (self.tags[0] if self.tags else "latest")


def catalog_entries(
    records: Mapping[str, Mapping[str, Any]],
    specs: Iterable[ModelSpec] = (),
    failures: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ModelEntry]:
    """Every model the site lists, sorted by name: each record, and each spec without one (failed or not built).

    A failure of a model that is neither in the models file nor published is not listed: it was removed.
    """
    failures = failures or {}
    wanted: dict[str, ModelSpec] = {}
    for spec in specs:
        wanted.setdefault(spec.repository, spec)  # variants of one repository: the first entry speaks for it
    entries = []
    for name in sorted(set(records) | set(wanted)):
        failure = _failure(failures.get(name))
        record = records.get(name)
        if record is not None:
            entries.append(entry_from_record(name, record, failure))
            continue
        known = wanted[name]
        entries.append(
            ModelEntry(
                name=name,
                status="failed" if failure is not None else "not-built",
                hf_id=known.hf_id,
                revision=known.revision,
                tags=tuple(known.tags),
                failure=failure,
            )
        )
    return entries


def entry_from_record(name: str, record: Mapping[str, Any], failure: Failure | None = None) -> ModelEntry:
    """A published model from its catalog record; fields that are missing or malformed stay empty."""
    front, card = split_front_matter(_text(record, "model_card"))
    card_data = record.get("card_data")
    return ModelEntry(
        name=name,
        status="published",
        hf_id=_text(record, "hf_id") or _text(record, "title"),
        revision=_text(record, "revision"),
        tags=_texts(record.get("tags")),
        task=_text(record, "pipeline_tag"),
        library=_text(record, "library_name"),
        license=_text(record, "license"),
        languages=_texts(record.get("languages")),
        base_models=_texts(record.get("base_models")),
        gated=record.get("gated") is True,
        parameters=_count(record.get("parameters")),
        tensor_types=_tensor_types(record.get("tensor_types")),
        downloads=_count(record.get("downloads")),
        likes=_count(record.get("likes")),
        total_size=_count(record.get("total_size")),
        files=_files(record.get("files")),
        index_digest=_text(record, "index_digest"),
        manifests=_manifests(record.get("manifests")),
        platforms=_texts(record.get("platforms")),
        layer_digest=_text(record, "layer_digest"),
        layer_size=_count(record.get("layer_size")),
        toc_digest=_text(record, "toc_digest"),
        diff_id=_text(record, "diff_id"),
        format_version=_text(record, "format_version"),
        built_at=_text(record, "published_at"),
        card=card,
        front_matter=card_data if isinstance(card_data, dict) else front,
        formats=_formats(record.get("formats")),
        failure=failure,
        record=record,
    )


def _failure(value: Mapping[str, Any] | None) -> Failure | None:
    if not isinstance(value, Mapping):
        return None
    failed_at = value.get("failed_at")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failed_at)) if _count(failed_at) is not None else ""
    return Failure(_text(value, "revision"), _text(value, "error"), when or _text(value, "failed_at"))


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _texts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _tensor_types(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        return ()
    pairs = [(str(k), v) for k, v in value.items() if _count(v) is not None]
    return tuple(sorted(pairs, key=lambda pair: (-pair[1], pair[0])))


def _files(value: object) -> tuple[ModelFile, ...]:
    if not isinstance(value, list):
        return ()
    files = []
    for item in value:
        if isinstance(item, Mapping) and isinstance(item.get("path"), str):
            size = _count(item.get("size"))
            files.append(ModelFile(item["path"], size or 0, _text(item, "sha256")))
    return tuple(files)


def _manifests(value: object) -> tuple[PlatformManifest, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        PlatformManifest(_text(item, "platform"), _text(item, "digest"))
        for item in value
        if isinstance(item, Mapping) and _text(item, "digest")
    )


def _formats(value: object) -> tuple[OtherFormat, ...]:
    if not isinstance(value, Mapping):
        return ()
    return tuple(
        OtherFormat(str(name), _text(item, "digest"), _text(item, "artifactType"), _texts(item.get("tags")))
        for name, item in sorted(value.items())
        if isinstance(item, Mapping) and _text(item, "digest") and _texts(item.get("tags"))
    )
