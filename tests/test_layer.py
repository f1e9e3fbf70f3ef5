"""The eStargz layer: round trips through plain extractors, the reference reader, and edge cases."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.build.source import files_from_dir
from pipeline.errors import ModelyardError
from pipeline.oci.estargz import FOOTER_SIZE, LayerFile, LayerResult, deflate_member, footer, write_layer
from pipeline.oci.format import SAMPLE_WINDOW, check_compressor
from tests.conftest import require_tool, run, verify_with_reference
from tests.golden import float16_like

MiB = 1024 * 1024
MakeTree = Callable[[Mapping[str, bytes]], Path]


def build(source: Path, blob: Path, **options: object) -> LayerResult:
    with open(blob, "wb") as sink:
        return write_layer(files_from_dir(source), sink, **options)  # type: ignore[arg-type]


def tree_contents(root: Path) -> dict[str, tuple[str, bytes | None, int]]:
    """{relative path: (kind, bytes, permission bits)} of everything under ``root``."""
    result: dict[str, tuple[str, bytes | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            result[path.relative_to(root).as_posix()] = ("dir", None, path.stat().st_mode & 0o777)
        for name in filenames:
            path = Path(dirpath) / name
            result[path.relative_to(root).as_posix()] = ("reg", path.read_bytes(), path.stat().st_mode & 0o777)
    return result


EDGE_CASES: dict[str, bytes] = {
    "config.json": b'{"hidden_size": 384}\n',
    "empty.txt": b"",
    "exactly-4MiB.bin": os.urandom(4 * MiB),
    "4MiB-plus-1.bin": os.urandom(4 * MiB + 1),
    "weights/model-00001-of-00002.safetensors": os.urandom(9 * MiB + 17),
    "sub/stargz.index.json": b"not the TOC\n",
    ("long/" + "n" * 120 + "/" + "m" * 110 + ".json"): b"long path\n",
    "ünïcödé/文件.txt": b"non-ASCII\n",
    "/".join(f"d{i}" for i in range(40)) + "/deep.txt": b"deep\n",
}


def test_plain_extractors_see_exactly_the_source_files(tmp_path: Path, tree: MakeTree) -> None:
    source = tree(EDGE_CASES)
    blob = tmp_path / "layer.tar.gz"
    layer = build(source, blob)
    expected = {
        path: (kind, data, 0o755 if kind == "dir" else 0o644) for path, (kind, data, _) in tree_contents(source).items()
    }

    with tarfile.open(blob, "r:gz") as archive:
        names = archive.getnames()
        modes = {m.name.rstrip("/"): (m.mode, m.uid, m.gid, m.mtime) for m in archive.getmembers()}
        archive.extractall(tmp_path / "python", filter="fully_trusted")
    assert "stargz.index.json" not in names
    assert set(modes) == set(expected)
    assert all(mode == (expected[name][2], 0, 0, 0) for name, mode in modes.items())
    python_tree = tree_contents(tmp_path / "python")
    assert {p: (k, d) for p, (k, d, _) in python_tree.items()} == {p: (k, d) for p, (k, d, _) in expected.items()}

    tar = require_tool("tar")
    (tmp_path / "gnu").mkdir()
    run(tar, "-xzf", str(blob), "-C", str(tmp_path / "gnu"))
    assert tree_contents(tmp_path / "gnu") == expected  # contents and 0644/0755 modes

    # The file list for the catalog has every file's size and sha256.
    assert {f.path: f.size for f in layer.files} == {p: len(d) for p, (k, d, _) in expected.items() if d is not None}


def test_the_reference_reader_accepts_the_blob(tmp_path: Path, tree: MakeTree) -> None:
    blob = tmp_path / "layer.tar.gz"
    layer = build(tree(EDGE_CASES), blob)
    report = verify_with_reference(blob, layer)
    assert report["end_marker_before_toc"] is True
    assert report["plain_extract_sees_toc"] is False
    assert report["blob_digest"] == layer.digest
    assert report["uncompressed_tar_bytes"] == layer.uncompressed_size
    assert report["regular_files"] == len(EDGE_CASES) + 1  # and the landmark
    # 9 MiB + 17 bytes is three chunks, 4 MiB + 1 two, exactly 4 MiB one.
    assert report["entries_by_type"] == {"dir": 45, "reg": len(EDGE_CASES) + 1, "chunk": 3}
    # No prefetch (a client's prefetch would take the first files whole: often the weights), and no
    # landmark file in the user's image.
    assert report["landmark"] == ".no.prefetch.landmark"
    assert report["plain_extract_sees_landmark"] is False


def test_a_model_with_no_files_is_a_valid_empty_layer(tmp_path: Path, tree: MakeTree) -> None:
    blob = tmp_path / "layer.tar.gz"
    layer = build(tree({}), blob)
    verify_with_reference(blob, layer)
    with tarfile.open(blob, "r:gz") as archive:
        assert archive.getnames() == []
    assert layer.files == ()


def test_layout_members_toc_and_footer(tmp_path: Path, tree: MakeTree) -> None:
    blob = tmp_path / "layer.tar.gz"
    layer = build(tree({"a.bin": b"x" * (5 * MiB), "b.txt": b"b"}), blob, chunk_size=4 * MiB)
    data = blob.read_bytes()
    assert data[-FOOTER_SIZE:] == footer(int(data[-FOOTER_SIZE + 16 : -FOOTER_SIZE + 32], 16))
    toc_offset = int(data[-FOOTER_SIZE + 16 : -FOOTER_SIZE + 32], 16)
    toc_tar = gzip.decompress(data[toc_offset:-FOOTER_SIZE])
    with tarfile.open(fileobj=io.BytesIO(toc_tar)) as archive:
        (member,) = archive.getmembers()
        toc = json.loads(archive.extractfile(member).read())  # type: ignore[union-attr]
    assert member.name == "stargz.index.json"
    entries = toc["entries"]
    assert [(e["name"], e["type"]) for e in entries] == [
        ("a.bin", "reg"),
        ("a.bin", "chunk"),
        ("b.txt", "reg"),
        (".no.prefetch.landmark", "reg"),  # after the end-of-archive marker, like the TOC
    ]
    first, second, small, landmark = entries
    assert landmark["offset"] < toc_offset and landmark["size"] == 1
    assert first["chunkSize"] == 4 * MiB and "chunkSize" not in second  # the last chunk's size is implicit
    assert second["chunkOffset"] == 4 * MiB
    assert first["digest"] == layer.files[0].digest
    assert all(e["offset"] > 0 and e["chunkDigest"].startswith("sha256:") for e in entries)
    # Every chunk starts its own gzip member, which begins with the chunk's bytes.
    for entry, content in ((first, b"x" * (4 * MiB)), (second, b"x" * MiB), (small, b"b"), (landmark, b"\x0f")):
        member_bytes = gzip.GzipFile(fileobj=io.BytesIO(data[entry["offset"] :])).read(len(content))
        assert member_bytes == content
    assert layer.annotations == {
        "containerd.io/snapshot/stargz/toc.digest": layer.toc_digest,
        "io.containers.estargz.uncompressed-size": str(layer.uncompressed_size),
    }


def test_bytes_do_not_depend_on_threads_or_location(tmp_path: Path, tree: MakeTree) -> None:
    text = b"".join(b"line %d of a text that compresses\n" % i for i in range(300_000))
    files = {"w.bin": os.urandom(13 * MiB + 3), "c.json": b"{}", "d/e": b"e", "t.txt": text}  # stored, deflated
    one = build(tree(files), tmp_path / "one.tar.gz", threads=1)
    three = build(tree(files), tmp_path / "three.tar.gz", threads=3)
    assert one == three
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "three.tar.gz").read_bytes()


def test_source_date_epoch_sets_every_time(tmp_path: Path, tree: MakeTree) -> None:
    blob = tmp_path / "layer.tar.gz"
    layer = build(tree({"d/f": b"f"}), blob, mtime=1700000000)
    with tarfile.open(blob, "r:gz") as archive:
        assert {m.mtime for m in archive.getmembers()} == {1700000000}
    verify_with_reference(blob, layer)


def test_a_file_that_shrinks_or_grows_while_read_is_an_error(tmp_path: Path) -> None:
    from pipeline.errors import SourceChangedError

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)

    def listed_as(size: int) -> list[LayerFile]:
        return [LayerFile("f.bin", size, lambda: open(path, "rb"))]

    with pytest.raises(SourceChangedError, match=r"f.bin: file ended at 100 bytes, but 101 were listed"):
        write_layer(listed_as(101), io.BytesIO())
    with pytest.raises(SourceChangedError, match=r"f.bin: file is longer than the 99 bytes listed"):
        write_layer(listed_as(99), io.BytesIO())


def stored_blocks_only(body: bytes | bytearray) -> bool:
    """Whether a raw deflate stream is made of stored blocks only (which are byte-aligned)."""
    position = 0
    while True:
        header = body[position]
        if header & 0b110:  # BTYPE: 00 is stored
            return False
        length = int.from_bytes(body[position + 1 : position + 3], "little")
        position += 5 + length
        if header & 1:  # BFINAL
            return position == len(body)


def inflate(body: bytes | bytearray) -> bytes:
    decompressor = zlib.decompressobj(-15)
    data = decompressor.decompress(body)
    assert decompressor.eof and not decompressor.unused_data
    return data


@pytest.mark.parametrize(
    ("kind", "content", "stored"),
    [
        ("random", os.urandom(4 * MiB), True),
        ("float16-like weights (save ~7%)", float16_like(4 * MiB, b"w"), True),
        ("text", b"".join(b'"token_%d": %d,\n' % (i, i) for i in range(250_000)), False),
        ("small text", b'{"hidden_size": 384}\n' * 20, False),
        ("a tar header alone", b"config.json".ljust(512, b"\0"), False),
        ("nothing", b"", True),
    ],
)
def test_members_that_barely_shrink_are_stored(kind: str, content: bytes, stored: bool) -> None:
    body = deflate_member(content)
    assert inflate(body) == content
    assert stored_blocks_only(body) is stored
    if stored:
        assert len(body) == len(content) + 5 * max(1, -(-len(content) // 65535))  # 5 bytes per 64 KiB block
    else:
        assert len(body) < 0.9 * len(content)


def test_the_store_rule_looks_at_evenly_spread_windows() -> None:
    """It decides from four 64 KiB windows (start, 1/3, 2/3, end): zeros between them do not count."""
    size = 4 * MiB
    step = (size - SAMPLE_WINDOW) // 3
    mostly_zeros = bytearray(size)
    for start in (0, step, 2 * step, size - SAMPLE_WINDOW):
        mostly_zeros[start : start + SAMPLE_WINDOW] = os.urandom(SAMPLE_WINDOW)
    assert stored_blocks_only(deflate_member(bytes(mostly_zeros)))
    # The same bytes shifted by half a window: the windows now see half zeros, and it is compressed.
    shifted = bytes(SAMPLE_WINDOW // 2) + bytes(mostly_zeros[: -SAMPLE_WINDOW // 2])
    body = deflate_member(shifted)
    assert not stored_blocks_only(body) and len(body) < size // 2 and inflate(body) == shifted


def test_another_compressor_version_is_refused() -> None:
    check_compressor()
    with pytest.raises(
        ModelyardError, match=r"format 2 needs deflate==0\.9\.0 \(libdeflate\), but 0\.8\.1 is installed"
    ):
        check_compressor("0.8.1")
