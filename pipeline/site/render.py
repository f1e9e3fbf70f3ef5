"""Render the whole catalog site, in memory: catalog entries in, ``{path: bytes}`` out.

Pure apart from reading the templates and assets (``site/`` at the repository root) once, in
:meth:`Templates.load`. The same entries and options always give the same bytes (no clock, no
randomness), so a re-render rewrites only the pages that changed (:mod:`pipeline.site.output`).

Pages link to each other with relative URLs, so the site works under any prefix: served by
``modelyard serve`` at ``/``, from a bucket, or from a folder. Only ``404.html`` uses root-relative
links, since it is served at whatever path was not found.

Example::

    templates = Templates.load()
    files = render_site(catalog_entries(records, specs), SiteOptions(registry_host="models.example.com"), templates)
    files["index.html"], files["org/model/index.html"], files["api/models.json"]
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from pipeline import __version__
from pipeline.errors import ModelyardError
from pipeline.site import numbers
from pipeline.site.assets import Assets
from pipeline.site.card import Card, read_card, search_words
from pipeline.site.catalog import ModelEntry
from pipeline.site.snippets import Host, Insecure, Snippet, copy_file, is_loopback, snippets

SITE_DIR = Path(__file__).resolve().parents[2] / "site"
FALLBACK_HOST = "127.0.0.1:5000"  # what `modelyard serve` listens on by default
SITE_FILES = ("index.html", "404.html", "robots.txt", "api/models.json", "api/search.json")
# Size and parameter ranges the index filters by: (key, label, low, high), high exclusive.
SIZE_RANGES = (
    ("s", "under 10 MB", 0, 10**7),
    ("m", "10 to 100 MB", 10**7, 10**8),
    ("l", "100 MB to 1 GB", 10**8, 10**9),
    ("xl", "1 to 10 GB", 10**9, 10**10),
    ("xxl", "over 10 GB", 10**10, None),
)
PARAM_RANGES = (
    ("s", "under 10M", 0, 10**7),
    ("m", "10M to 100M", 10**7, 10**8),
    ("l", "100M to 1B", 10**8, 10**9),
    ("xl", "1B to 10B", 10**9, 10**10),
    ("xxl", "over 10B", 10**10, None),
)


@dataclass(frozen=True)
class SiteOptions:
    """``registry_host`` goes into every snippet; None means "the host the page is served from", which
    the page's script fills in (the static HTML says :data:`FALLBACK_HOST` until it does)."""

    registry_host: str | None = None
    title: str = "modelyard"


@dataclass(frozen=True)
class Templates:
    environment: jinja2.Environment
    assets: Assets

    @classmethod
    def load(cls, directory: Path = SITE_DIR) -> Templates:
        templates = directory / "templates"
        if not templates.is_dir():
            raise ModelyardError(f"{templates}: the site's templates are missing (a checkout of modelyard has them)")
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.filters.update(
            bytes=numbers.human_bytes,
            count=numbers.human_count,
            short_sha=numbers.short_sha,
            short_digest=numbers.short_digest,
            date=lambda iso: iso[:10] if iso else "—",
            thousands=lambda n: "—" if n is None else f"{n:,}",
            percent=_percent,
        )
        return cls(environment, Assets.load(directory / "assets"))

    def render(self, template: str, **context: Any) -> bytes:
        return self.environment.get_template(template).render(**context).encode("utf-8")


def render_site(entries: Sequence[ModelEntry], options: SiteOptions, templates: Templates) -> dict[str, bytes]:
    """Every file of the site by its path: pages, the JSON API, the assets."""
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ModelyardError("two catalog entries share a name")
    files: dict[str, bytes] = dict(templates.assets.files)
    common = _common(options, templates)
    cards = [read_card(entry.card, entry.hub_url, entry.revision) for entry in entries]
    for entry, card in zip(entries, cards, strict=True):
        files[page_path(entry.name)] = render_model_page(entry, card, templates, common)
        files[f"api/models/{entry.name}.json"] = _json(model_json(entry))
    files["index.html"] = render_index(entries, cards, templates, common)
    files["404.html"] = templates.render("404.html", root="/", **common)
    files["robots.txt"] = b"User-agent: *\nAllow: /\n"
    files["api/models.json"] = _json(
        {
            "registry": options.registry_host,
            "generator": f"modelyard {__version__}",
            "models": [summary_json(e) for e in entries],
        }
    )
    files["api/search.json"] = _json(
        {e.name: search_words(c.text) for e, c in zip(entries, cards, strict=True) if c.text}
    )
    _check_paths(files)
    return files


def page_path(name: str) -> str:
    """Where a model's page is: ``org/model/index.html``, the image's name is also the page's URL."""
    return f"{name}/index.html"


def render_index(
    entries: Sequence[ModelEntry], cards: Sequence[Card], templates: Templates, common: dict[str, Any]
) -> bytes:
    published = [e for e in entries if e.status == "published"]
    return templates.render(
        "index.html",
        root="",
        entries=entries,
        rows=[_row(e, c) for e, c in zip(entries, cards, strict=True)],
        facets={
            "task": _facet(e.task for e in entries),
            "library": _facet(e.library for e in entries),
            "license": _facet(e.license for e in entries),
        },
        size_ranges=SIZE_RANGES,
        param_ranges=PARAM_RANGES,
        counts=Counter(e.status for e in entries),
        total_bytes=sum(e.total_size or 0 for e in published),
        **common,
    )


def render_model_page(entry: ModelEntry, card: Card, templates: Templates, common: dict[str, Any]) -> bytes:
    sizes = {f.path: f.size for f in entry.files}
    return templates.render(
        "model.html",
        root="../" * (entry.name.count("/") + 1),
        entry=entry,
        summary=card.summary,
        card_html=card.html,
        facts=_facts(entry),
        snippets=snippets(entry) if entry.status == "published" else [],
        file_snippets=[copy_file(entry, f.path) for f in entry.files],
        by_type=numbers.shares(sizes, "type") if sizes else [],
        by_folder=numbers.shares(sizes, "folder") if len({p.partition("/")[0] for p in sizes if "/" in p}) else [],
        **common,
    )


def model_json(entry: ModelEntry) -> dict[str, Any]:
    """One model as data: its catalog record as stored, with the status the site gives it."""
    value: dict[str, Any] = {**entry.record, "name": entry.name, "status": entry.status}
    if entry.failure is not None:
        value["last_failure"] = {"revision": entry.failure.revision, "error": entry.failure.error,
                                 "failed_at": entry.failure.failed_at}  # fmt: skip
    if not entry.record:
        value |= {"hf_id": entry.hf_id, "revision": entry.revision, "tags": list(entry.tags)}
    return value


def summary_json(entry: ModelEntry) -> dict[str, Any]:
    """One model in ``api/models.json``: what the index lists."""
    return {
        "name": entry.name,
        "hf_id": entry.hf_id,
        "status": entry.status,
        "page": f"{entry.name}/",
        "task": entry.task,
        "library": entry.library,
        "license": entry.license,
        "parameters": entry.parameters,
        "total_size": entry.total_size,
        "revision": entry.revision,
        "tags": list(entry.tags),
        "index_digest": entry.index_digest,
        "published_at": entry.built_at,
        "downloads": entry.downloads,
        "likes": entry.likes,
    }


def _common(options: SiteOptions, templates: Templates) -> dict[str, Any]:
    host = options.registry_host or FALLBACK_HOST
    auto = options.registry_host is None
    registry = Markup('<span class="reg-host">{}</span>').format(host) if auto else escape(host)
    insecure = is_loopback(host)

    def code(snippet: Snippet, id: str, hidden: bool = False) -> Markup:
        """A snippet as ``<code>``, its registry host and plain-HTTP flags marked for the page's script."""
        parts = []
        for part in snippet.parts:
            if isinstance(part, Host):
                parts.append(registry)
            elif isinstance(part, Insecure):
                if insecure or auto:
                    parts.append(Markup('<span class="reg-insecure">{}</span>').format(part))
            else:
                parts.append(escape(part))
        attributes = Markup(' id="{}"{}').format(id, Markup(" hidden") if hidden else "")
        return Markup("<code{}>{}</code>").format(attributes, Markup("").join(parts))

    return {
        "code": code,
        "registry": registry,
        "site_title": options.title,
        "asset": templates.assets.path,
        "host": host,
        "host_is_auto": auto,
        "insecure": insecure,
        "version": __version__,
    }


def _row(entry: ModelEntry, card: Card) -> dict[str, Any]:
    """The data attributes the index's script filters and sorts by."""
    return {
        "name": entry.name,
        "task": entry.task,
        "library": entry.library,
        "license": entry.license,
        "status": entry.status,
        "size": "" if entry.total_size is None else str(entry.total_size),
        "params": "" if entry.parameters is None else str(entry.parameters),
        "downloads": "" if entry.downloads is None else str(entry.downloads),
        "likes": "" if entry.likes is None else str(entry.likes),
        "built": entry.built_at,
        "summary": card.summary,
    }


def _facts(entry: ModelEntry) -> list[tuple[str, str]]:
    """The front matter and Hub metadata as facts (label, value); what is unknown is left out."""
    facts = [
        ("Task", entry.task),
        ("Library", entry.library),
        ("License", entry.license),
        ("Parameters", f"{numbers.human_count(entry.parameters)} ({entry.parameters:,})" if entry.parameters else ""),
        ("Tensor types", ", ".join(f"{dtype} ({numbers.human_count(n)})" for dtype, n in entry.tensor_types)),
        (
            "Size",
            f"{numbers.human_bytes(entry.total_size)} in {len(entry.files)} files"
            if entry.total_size is not None
            else "",
        ),
        ("Languages", ", ".join(entry.languages)),
        ("Base model", ", ".join(entry.base_models)),
        ("Datasets", ", ".join(_strings(entry.front_matter.get("datasets")))),
        ("Tags", ", ".join(_strings(entry.front_matter.get("tags")))),
        ("Gated on the Hub", "yes: accept its conditions on the Hub first" if entry.gated else ""),
        ("Downloads (30 days)", f"{entry.downloads:,}" if entry.downloads is not None else ""),
        ("Likes", f"{entry.likes:,}" if entry.likes is not None else ""),
        ("Built", entry.built_at[:10] if entry.built_at else ""),
        ("Image format", f"modelyard format {entry.format_version}" if entry.format_version else ""),
    ]
    return [(label, value) for label, value in facts if value]


def _percent(fraction: float) -> str:
    if fraction >= 0.9995:
        return "100%"
    return "<0.1%" if fraction < 0.001 else f"{fraction * 100:.1f}%"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _facet(values: Iterable[str]) -> list[tuple[str, int]]:
    counts = Counter(v for v in values if v)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


def _check_paths(files: dict[str, bytes]) -> None:
    """A model named like a site file (``api/models.json``) would turn a file into a folder: refuse it."""
    folders = {path[:i] for path in files for i, char in enumerate(path) if char == "/"}
    clashes = sorted(folders & set(files))
    if clashes:
        raise ModelyardError(f"the site cannot hold both the file and the folder {clashes[0]!r}: rename that model")


__all__ = ["SITE_FILES", "SiteOptions", "Snippet", "Templates", "page_path", "render_site"]
