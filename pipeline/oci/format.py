"""The image format version: everything that decides the bytes of a layer, named once.

Blob digests depend on the compressor, its version and level, the rule that stores a member instead of
compressing it, the chunk size and the tar rules (DESIGN §4). Changing any of them changes every digest,
so it happens on purpose only: bump ``FORMAT_VERSION``, update the golden digests in
``tests/test_golden.py``, and the pipeline rebuilds what an older version built.

Format 2 deflates with libdeflate, whose output is the same on every CPU (x86-64 with SSE only, AVX2 or
AVX-512, and aarch64: ``tests/test_golden.py`` checks it under qemu); format 1's ISA-L deflated
differently on aarch64. Members that would barely shrink (float16/float32 weights save about 8%) are
written as deflate stored blocks, as ModelPack and Docker model images keep weights uncompressed: the
build then costs no compression and a pull no inflation (bench/compressors.py has the figures).
"""

from __future__ import annotations

import deflate

from pipeline.errors import ModelyardError

FORMAT_VERSION = "2"

# The PyPI package `deflate` bundles libdeflate (0.9.0: libdeflate 1.25); another release may deflate
# differently, so the version is exact.
COMPRESSOR = "libdeflate"
COMPRESSOR_PACKAGE = "deflate"
COMPRESSOR_VERSION = "0.9.0"
# Level 1 is the fastest, and on weights the smallest too (bfloat16: 0.777 of the input vs 0.796 at level 6);
# on text it gives 0.434 vs 0.398 at level 6 for 3.5x the speed (tokenizer.json, bench/compressors.py).
COMPRESSION_LEVEL = 1

# The store rule: libdeflate compresses a sample of the member (SAMPLE_WINDOWS windows of SAMPLE_WINDOW
# bytes, evenly spread, or the whole member when it is smaller); when that saves less than
# STORE_BELOW_SAVING_PERCENT of the sample, the whole member is written as stored blocks. The decision
# depends only on the member's bytes and libdeflate's output, so it is as reproducible as they are.
STORE_BELOW_SAVING_PERCENT = 10
SAMPLE_WINDOWS = 4
SAMPLE_WINDOW = 64 * 1024

CHUNK_SIZE = 4 * 1024 * 1024

FORMAT_ANNOTATION = "dev.modelyard.format"
FORMAT_DESCRIPTION = (
    f"modelyard/{FORMAT_VERSION} (estargz, {COMPRESSOR} ({COMPRESSOR_PACKAGE} {COMPRESSOR_VERSION}) "
    f"level {COMPRESSION_LEVEL}, stored when saving < {STORE_BELOW_SAVING_PERCENT}%, "
    f"{CHUNK_SIZE // (1024 * 1024)} MiB chunks)"
)


def check_compressor(installed: str | None = None) -> None:
    """Refuse to build with a compressor other than the one the format pins.

    ``installed`` is the version to check, by default the installed package's.
    """
    version = deflate.__version__ if installed is None else installed
    if version != COMPRESSOR_VERSION:
        raise ModelyardError(
            f"format {FORMAT_VERSION} needs {COMPRESSOR_PACKAGE}=={COMPRESSOR_VERSION} ({COMPRESSOR}), but "
            f"{version} is installed; its output (and so every digest) could differ. "
            "Install the pinned version from requirements.lock."
        )
