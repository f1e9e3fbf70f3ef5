"""The ``modelyard`` command line.

Every subcommand's ``--help`` explains it with an example. Errors that modelyard diagnoses print as
``error: ...`` lines and exit 1; usage errors exit 2. Each subcommand lives in its own module with a
``register(commands)`` that adds its parser.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.cli import build, changes, plan, report, site, store, update
from pipeline.cli.console import FORMATTER, err
from pipeline.errors import ModelsFileError, ModelyardError
from pipeline.oci.format import FORMAT_DESCRIPTION
from worker import cli as serve


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="modelyard",
        formatter_class=FORMATTER,
        description="Turn pinned Hugging Face models into reproducible, lazily-pullable OCI images.",
        epilog="Start with: modelyard build --from-dir ./my-model --name my-org/my-model\n"
        "Each subcommand has its own --help.",
    )
    root.add_argument("--version", action="version", version=f"modelyard {__version__}, format {FORMAT_DESCRIPTION}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    build.register(commands)
    plan.register(commands)
    store.register(commands)
    update.register(commands)
    report.register(commands)
    changes.register(commands)
    serve.register(commands)
    site.register(commands)
    return root


def keep_freed_buffers() -> None:
    """Ask glibc to keep freed multi-megabyte buffers for reuse instead of returning them to the OS.

    Every 4 MiB chunk allocates fresh buffers (the chunk read, its compressed member). By default glibc
    unmaps them on free, and the next chunk pays about a thousand page faults to map them again: a
    tenth of the build time (bench/layer.py). Live memory stays bounded by the writer's window.

    Two arenas at most: by default every thread that allocates (compressors, uploaders, the Hub
    stream's connections) may get an arena of its own, each keeping its own freed buffers, and the
    peak RSS grows with the thread count (bench/stream.py: about 80 MB more when streaming).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
    libc.mallopt(m_arena_max, 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keep_freed_buffers()
    try:
        return int(args.run(args))
    except ModelsFileError as error:
        for problem in error.problems:
            err.print(f"error: {problem}", markup=False)
        err.print(f"{len(error.problems)} problem(s) found", markup=False)
        return 1
    except ModelyardError as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted; nothing half-published remains (run again to continue)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
