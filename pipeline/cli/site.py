"""``modelyard site``: render the catalog website from the store into its ``site/`` (and a directory)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.console import DEFAULT_MODELS_FILE, FORMATTER, add_store_option, err, out
from pipeline.models.file import ModelSpec, load_models
from pipeline.site.output import publish_site, registry_host_of
from pipeline.site.render import FALLBACK_HOST, SiteOptions
from pipeline.store import Store, open_store

EPILOG = f"""\
examples:
  modelyard site                                        # ./store/site, served by `modelyard serve` at /
  modelyard site --registry-host models.example.com     # snippets name that registry
  modelyard site --store s3://models/prod --out public  # and a copy to upload to any static host

The snippets on each page name the registry to pull from. Without --registry-host it is the host the
page is served from (the page's script fills it in; with JavaScript off the pages say {FALLBACK_HOST},
where `modelyard serve` listens by default). `modelyard build` renders the site again after
publishing, with the registry host the site already has.

Models of the models file that failed or were never built are listed with that status. Only the
files that changed are written; files of models gone from the catalog are removed.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "site",
        help="render the catalog website into the store",
        formatter_class=FORMATTER,
        description="Render the catalog website from the store's catalog records: an index with search and\n"
        "filters, a page per model (snippets, files, sizes, digests, model card) at /<org>/<model>/,\n"
        "and the catalog as JSON at /api/models.json. Static files only: no CDN, fonts or third-party scripts.",
        epilog=EPILOG,
    )
    add_store_option(command)
    command.add_argument(
        "--registry-host",
        metavar="HOST[:PORT]",
        help="registry host the snippets name (default: the host each page is served from)",
    )
    command.add_argument("--out", metavar="DIR", type=Path, help="also write the site into DIR")
    command.add_argument(
        "--models",
        default=DEFAULT_MODELS_FILE,
        metavar="FILE",
        help=f"models file whose unbuilt and failed models are listed too (default: {DEFAULT_MODELS_FILE}, if there)",
    )
    command.set_defaults(run=cmd_site)


def cmd_site(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    specs = models_if_present(args.models, explicit=args.models != DEFAULT_MODELS_FILE)
    report = publish_site(store, specs, SiteOptions(registry_host=args.registry_host), out=args.out)
    out.print(report.summary(), markup=False)
    return 0


def refresh_site(store: Store, models_file: str, explicit: bool = True) -> None:
    """Render the site again after a build, with the registry host it was last rendered with."""
    specs = models_if_present(models_file, explicit)
    report = publish_site(store, specs, SiteOptions(registry_host=registry_host_of(store)))
    err.print(report.summary(), markup=False)


def models_if_present(path: str, explicit: bool) -> list[ModelSpec]:
    """The models file's entries; the default file may be absent (a store built with --from-dir)."""
    if not explicit and not Path(path).exists():
        return []
    return load_models(path)
