"""The verifier itself (tests/go/estargz-ref): it must catch a broken blob, or its green proves nothing.

Each test starts from a valid layer written by modelyard, breaks one thing, and checks that ``verify``
exits 1 with ``"ok": false`` and an error that names what broke.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline.oci import tarball
from pipeline.oci.estargz import FOOTER_SIZE, LayerFile, LayerResult, footer, write_layer
from tests.conftest import reference_verify, require_tool, run, verify_with_reference

MiB = 1024 * 1024
# Fixed bytes: where a flipped bit lands in a deflate stream decides which check sees it first.
FILES = {"config.json": b'{"hidden_size": 384}\n', "model.safetensors": random.Random(0).randbytes(9 * MiB + 5)}


def write(files: dict[str, bytes], blob: Path) -> LayerResult:
    layer_files = [LayerFile(path, len(data), lambda data=data: io.BytesIO(data)) for path, data in files.items()]
    with open(blob, "wb") as sink:
        return write_layer(layer_files, sink)


def toc_offset(data: bytes) -> int:
    return int(data[-FOOTER_SIZE + 16 : -FOOTER_SIZE + 32], 16)


def read_toc(data: bytes) -> dict[str, object]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data[toc_offset(data) : -FOOTER_SIZE]))) as archive:
        (member,) = archive.getmembers()
        return json.loads(archive.extractfile(member).read())  # type: ignore[union-attr,no-any-return]


def with_toc(data: bytes, toc: dict[str, object]) -> bytes:
    """The blob with its TOC member replaced (same layout, a valid gzip member): a TOC that lies."""
    offset = toc_offset(data)
    toc_json = json.dumps(toc, separators=(",", ":")).encode()
    toc_tar = (
        tarball.regular_file_header(tarball.TOC_NAME, len(toc_json), 0)
        + toc_json
        + tarball.padding(len(toc_json))
        + tarball.END_OF_ARCHIVE
    )
    return data[:offset] + gzip.compress(toc_tar, mtime=0) + footer(offset)


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, LayerResult]:
    path = tmp_path / "layer.tar.gz"
    layer = write(FILES, path)
    verify_with_reference(path, layer)  # valid before we break it
    return path, layer


def expect_failure(blob: Path, *args: str) -> list[str]:
    status, report = reference_verify(blob, *args)
    assert status == 1 and report["ok"] is False, report
    errors: list[str] = report["errors"]
    return errors


@pytest.mark.parametrize("where", ["first chunk", "last chunk", "toc", "footer"])
def test_a_flipped_byte_is_caught(blob: tuple[Path, LayerResult], where: str) -> None:
    path, layer = blob
    data = bytearray(path.read_bytes())
    entries = read_toc(bytes(data))["entries"]
    chunks = [e for e in entries if e.get("name") == "model.safetensors"]  # type: ignore[union-attr]
    position = {
        "first chunk": chunks[0]["offset"] + 1000,
        "last chunk": chunks[-1]["offset"] + 1000,
        "toc": toc_offset(bytes(data)) + 40,
        "footer": len(data) - 20,
    }[where]
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    errors = expect_failure(path, "--toc-digest", layer.toc_digest, "--diff-id", layer.diff_id)
    if "chunk" in where:  # both passes see it: the reference reader's, and the plain gzip reader's
        assert any("model.safetensors" in e and not e.startswith("plain") for e in errors), errors
        assert any(e.startswith("plain gzip") for e in errors), errors


def test_a_truncated_blob_is_caught(blob: tuple[Path, LayerResult]) -> None:
    path, layer = blob
    path.write_bytes(path.read_bytes()[:-FOOTER_SIZE])
    errors = expect_failure(path, "--toc-digest", layer.toc_digest)
    assert any("footer" in e.lower() or "OpenFooter" in e for e in errors), errors


def test_wrong_announced_digests_are_caught(blob: tuple[Path, LayerResult]) -> None:
    path, _ = blob
    zero = "sha256:" + "0" * 64
    assert any("VerifyTOC" in e for e in expect_failure(path, "--toc-digest", zero))
    assert any("DiffID" in e for e in expect_failure(path, "--diff-id", zero))


def test_a_toc_that_lies_about_a_chunk_is_caught(blob: tuple[Path, LayerResult]) -> None:
    """Every gzip member intact, only the TOC's chunkDigest wrong: the reader's chunk check must fail."""
    path, _ = blob
    data = path.read_bytes()
    toc = read_toc(data)
    entries: list[dict[str, object]] = toc["entries"]  # type: ignore[assignment]
    victim = next(e for e in entries if e["type"] == "chunk")
    victim["chunkDigest"] = "sha256:" + "1" * 64
    path.write_bytes(with_toc(data, toc))
    errors = expect_failure(path)
    assert any("model.safetensors" in e and "chunkDigest" in e for e in errors), errors


def test_a_toc_offset_off_a_member_boundary_is_caught(blob: tuple[Path, LayerResult]) -> None:
    path, _ = blob
    data = path.read_bytes()
    toc = read_toc(data)
    entries: list[dict[str, object]] = toc["entries"]  # type: ignore[assignment]
    victim = next(e for e in entries if e["type"] == "chunk")
    victim["offset"] = int(victim["offset"]) + 1  # type: ignore[call-overload]
    path.write_bytes(with_toc(data, toc))
    errors = expect_failure(path)
    assert any("not where a gzip member starts" in e for e in errors), errors


def test_a_file_missing_from_the_toc_is_caught(blob: tuple[Path, LayerResult]) -> None:
    path, _ = blob
    data = path.read_bytes()
    toc = read_toc(data)
    toc["entries"] = [e for e in toc["entries"] if e["name"] != "config.json"]  # type: ignore[attr-defined,index]
    path.write_bytes(with_toc(data, toc))
    assert any("config.json" in e and "not in the TOC" in e for e in expect_failure(path))


def test_the_reference_writer_output_verifies(tmp_path: Path) -> None:
    """``build`` is the reference writer: its blob passes ``verify``, with the reference layout (a
    landmark, the TOC visible to plain extractors)."""
    tool = require_tool("estargz-ref")
    source = tmp_path / "in.tar"
    with tarfile.open(source, "w") as archive:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out = tmp_path / "reference.tar.gz"
    built = json.loads(run(tool, "build", str(source), str(out), "--level", "1").stdout)
    assert built["ok"] and built["input_bytes"] == source.stat().st_size and built["output_bytes"] == out.stat().st_size
    status, report = reference_verify(out, "--toc-digest", built["toc_digest"], "--diff-id", built["diff_id"])
    assert status == 0 and report["ok"], report["errors"]
    assert report["blob_digest"] == built["blob_digest"]
    assert report["landmark"] == ".no.prefetch.landmark" and report["plain_extract_sees_landmark"] is True
    assert report["plain_extract_sees_toc"] is True and report["end_marker_before_toc"] is False


def test_usage_errors_exit_2() -> None:
    tool = require_tool("estargz-ref")
    for args in (["verify"], ["verify", "a", "b"], ["nonsense"], ["build", "x", "y", "--level", "12"]):
        result = subprocess.run([tool, *args], capture_output=True, text=True)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage:" in result.stderr
