"""The reproducible tar rules, checked against Python's own tar reader."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.errors import LayerInputError
from pipeline.oci import tarball
from pipeline.oci.tarball import TarEntry, header, padding, plan_entries


def read_headers(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data + tarball.END_OF_ARCHIVE), mode="r:") as archive:
        return archive.getmembers()


def test_entries_are_sorted_bytewise_with_every_directory() -> None:
    entries = plan_entries([("b/z.txt", 1), ("a-b", 2), ("a/x/y.bin", 3), ("B", 4)])
    assert [(e.name, e.kind) for e in entries] == [
        ("B", "reg"),
        ("a", "dir"),
        ("a-b", "reg"),
        ("a/x", "dir"),
        ("a/x/y.bin", "reg"),
        ("b", "dir"),
        ("b/z.txt", "reg"),
    ]


def test_header_fields_carry_no_host_information() -> None:
    (info,) = read_headers(header(TarEntry("dir/file.bin", "reg", 123), mtime=0) + bytes(512))
    assert (info.name, info.size, info.mode, info.mtime) == ("dir/file.bin", 123, 0o644, 0)
    assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
    assert info.pax_headers == {}
    (directory,) = read_headers(header(TarEntry("dir", "dir"), mtime=1700000000))
    assert directory.isdir() and directory.mode == 0o755 and directory.mtime == 1700000000


def test_long_names_use_the_ustar_prefix_before_pax() -> None:
    name = "a" * 90 + "/" + "b" * 90  # 181 bytes: fits prefix (90) + name (90)
    header_bytes = header(TarEntry(name, "reg", 0), mtime=0)
    assert len(header_bytes) == 512  # no PAX header needed
    assert read_headers(header_bytes)[0].name == name


@pytest.mark.parametrize(
    "name",
    ["x" * 101, "d/" + "y" * 150, "a" * 200 + "/" + "b" * 50, "ünïcödé/файл.txt", "emoji-🤗.json"],
)
def test_pax_path_only_when_ustar_cannot_hold_the_name(name: str) -> None:
    header_bytes = header(TarEntry(name, "reg", 7), mtime=0)
    (info,) = read_headers(header_bytes + padding(0) + b"1234567" + padding(7))
    assert info.name == name and info.size == 7
    assert set(info.pax_headers) == {"path"}  # no time records, nothing else


def test_sizes_of_8_gib_and_more_use_a_pax_size_record() -> None:
    size = 8 * 1024**3 + 5
    data = header(TarEntry("big.safetensors", "reg", size), mtime=0)
    pax = data[512:1024].rstrip(b"\0")
    assert pax == b"19 size=8589934597\n"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/../b", "'..'"),
        ("./a", "'.'"),
        ("a//b", "empty"),
        ("stargz.index.json", "reserved"),
        (".no.prefetch.landmark", "reserved"),
        (".prefetch.landmark", "reserved"),
        ("a\0b", "NUL"),
    ],
)
def test_paths_that_could_escape_or_confuse_are_refused(path: str, why: str) -> None:
    with pytest.raises(LayerInputError, match=why):
        plan_entries([(path, 1)])


def test_nested_reserved_names_are_ordinary_files() -> None:
    for name in ("stargz.index.json", ".no.prefetch.landmark"):
        assert [e.name for e in plan_entries([(f"sub/{name}", 1)])] == ["sub", f"sub/{name}"]


def test_a_file_that_is_also_a_directory_is_refused() -> None:
    with pytest.raises(LayerInputError, match="also the directory"):
        plan_entries([("a", 1), ("a/b", 1)])
    with pytest.raises(LayerInputError, match="listed twice"):
        plan_entries([("a", 1), ("a", 1)])
