"""The image format version: everything that decides the bytes of a layer, named once.

Blob digests depend on the compressor, its version and level, the chunk size and the tar rules
(DESIGN §4). Changing any of them changes every digest, so it happens on purpose only: bump
``FORMAT_VERSION``, update the golden digests in ``tests/test_golden.py``, and the pipeline rebuilds
what an older version built.
"""

from __future__ import annotations

import isal

from pipeline.errors import ModelyardError

FORMAT_VERSION = "2"

# python-isal releases bundle a given ISA-L; a different release may deflate differently.
COMPRESSOR = "isal"
COMPRESSOR_VERSION = "1.9.1"
COMPRESSION_LEVEL = 1  # ISA-L level 1: as small as level 2 on weights, and the fastest (bench/layer.py)
CHUNK_SIZE = 4 * 1024 * 1024

FORMAT_ANNOTATION = "dev.modelyard.format"
FORMAT_DESCRIPTION = (
    f"modelyard/{FORMAT_VERSION} (estargz, {COMPRESSOR} {COMPRESSOR_VERSION} level {COMPRESSION_LEVEL}, "
    f"{CHUNK_SIZE // (1024 * 1024)} MiB chunks)"
)


def check_compressor() -> None:
    """Refuse to build with a compressor other than the one the format pins."""
    if isal.__version__ != COMPRESSOR_VERSION:
        raise ModelyardError(
            f"format {FORMAT_VERSION} needs isal=={COMPRESSOR_VERSION}, but {isal.__version__} is installed; "
            "its output (and so every digest) could differ. Install the pinned version from requirements.lock."
        )
