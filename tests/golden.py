"""The golden fixture: a fixed model tree whose image digests ``tests/test_golden.py`` pins.

It imports nothing but the pipeline and the standard library, so it also runs on an emulated CPU with
only the pinned compressor installed (the cross-CPU tests run it under qemu). As a program it builds the
fixture into a fresh store under DIR and prints the digests as JSON:

    python -m tests.golden DIR [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from pipeline.build.publish import BuiltImage, build_and_publish
from pipeline.build.source import files_from_dir
from pipeline.oci.image import ImageMetadata
from pipeline.store import LocalBackend, Store


def pseudo_random(size: int, seed: bytes) -> bytes:
    """Deterministic bytes, the same on every machine and Python version."""
    blocks = (hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def float16_like(size: int, seed: bytes) -> bytes:
    """Bytes that compress like float16 weights (by about 7%): random low bytes, and high bytes holding a
    sign and one of 24 exponent/mantissa patterns. The store rule writes them as stored blocks."""
    data = bytearray(pseudo_random(size, seed))
    data[1::2] = data[1::2].translate(_FLOAT16_HIGH_BYTE)
    return bytes(data)


_FLOAT16_HIGH_BYTE = bytes((b & 0x80) | (0x20 + (b & 0x7F) % 24) for b in range(256))


FIXTURE = {
    "config.json": b'{"architectures": ["BertModel"], "hidden_size": 384}\n',
    "1_Pooling/config.json": b'{"word_embedding_dimension": 384}\n',
    "model.safetensors": pseudo_random(5 * 1024 * 1024 + 3, b"weights"),
    "model.fp16.safetensors": float16_like(4 * 1024 * 1024 + 1000, b"float16"),
    "tokenizer.json": b'{"version": "1.0"}\n' * 1000,
    "vocab.txt": b"".join(b"%s%d\n" % (w, i) for i in range(60_000) for w in (b"tok", b"##piece")),
    "empty.txt": b"",
    "deep/a/b/c/" + "long-name-" * 12 + ".txt": b"long\n",
    "données/été.txt": "ünïcödé\n".encode(),
}

METADATA = ImageMetadata(
    title="golden/fixture",
    source="https://huggingface.co/golden/fixture",
    revision="0123456789" * 4,
    licenses="mit",
)


def write_fixture(root: Path) -> Path:
    """Create the fixture's files under ``root``."""
    for relative, data in FIXTURE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def build_fixture(workdir: Path, threads: int) -> BuiltImage:
    """Build and publish the fixture into a store under ``workdir``."""
    store = Store(LocalBackend(workdir / "store"))
    return build_and_publish(
        store,
        files_from_dir(write_fixture(workdir / "fixture")),
        name="golden/fixture",
        tags=["latest"],
        metadata=METADATA,
        threads=threads,
    )


def digests(built: BuiltImage) -> dict[str, object]:
    """Every digest of a built image: layer, DiffID, TOC, index, manifests, configs."""
    return {
        "layer": built.layer.digest,
        "diff_id": built.layer.diff_id,
        "toc": built.layer.toc_digest,
        "index": built.index.digest,
        "manifests": [m.descriptor.digest for m in built.image.manifests],
        "configs": [c.descriptor.digest for c in built.image.configs],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="an empty working directory")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(digests(build_fixture(args.dir, args.threads))))


if __name__ == "__main__":
    main()
