"""A real `modelyard build` killed with SIGKILL at the worst moments, on both stores: running it again converges.

What the README's Reliability section promises is checked here: after a kill at each write a build makes
to the store, no tag points at anything missing, no blob holds other bytes than its digest says, and
running the build again gives the store a build without the kill would have left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.digest import sha256_digest
from pipeline.oci.references import missing
from pipeline.store import Store, open_store
from pipeline.store.gc import DEFAULT_GRACE, sweep_uploads
from pipeline.store.s3 import S3Backend
from pipeline.store.store import BLOBS_PREFIX
from tests.conftest import write_tree
from tests.fixture_hub import FixtureHub, FixtureRepo
from tests.golden import pseudo_random
from tests.killing import Forker, modelyard, paused_at
from tests.registry_fixtures import moto_s3
from tests.test_hub import TINY_FILES, TINY_REVISION

NAME = "org/tiny-model"
MiB = 1024 * 1024


@pytest.fixture
def hub() -> Iterator[FixtureHub]:
    with FixtureHub([FixtureRepo("Org/Tiny-Model", TINY_REVISION, TINY_FILES)]) as running:
        yield running


@contextlib.contextmanager
def a_store(kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A store location of each kind, and the environment a process needs to reach it."""
    if kind == "local":
        yield str(tmp_path / "store"), {}
        return
    with moto_s3() as s3:
        yield "s3://models/killed", s3.env


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_kill_between_the_tags_and_the_catalog_record(hub: FixtureHub, tmp_path: Path, kind: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f'models:\n  - name: Org/Tiny-Model\n    sha: "{TINY_REVISION}"\n')
    with a_store(kind, tmp_path) as (location, env):
        env = {**env, "HF_ENDPOINT": hub.url}
        args = ["build", "--all", "--models", str(models), "--store", location, "--cache-dir", str(tmp_path / "cache")]
        store = open_store(location)
        with paused_at(f"catalog/{NAME}.json", args, tmp_path, env):
            # The revision tag (the last one) has just appeared; the record is about to be written.
            latest = store.get_tag(NAME, "latest")
            assert latest is not None and store.get_tag(NAME, TINY_REVISION) == latest
            assert store.get_catalog(NAME) is None

        rerun = modelyard(args, env)
        assert rerun.returncode == 0, rerun.stderr
        assert "up to date" not in rerun.stdout + rerun.stderr  # the record was missing: not up to date
        record = store.get_catalog(NAME)
        assert record is not None and record["revision"] == TINY_REVISION
        assert record["index_digest"] == latest.digest  # built again to the very same image
        assert store.get_tag(NAME, "latest") == latest

        again = modelyard(args, env)
        assert again.returncode == 0 and "up to date" in again.stdout + again.stderr


def assert_nothing_half_published(store: Store, moment: str = "") -> None:
    """Every tag reaches only blobs that are there, and every blob is what its digest says."""
    for info in store.backend.list(BLOBS_PREFIX):
        digest = "sha256:" + info.key.removeprefix(BLOBS_PREFIX)
        assert sha256_digest(store.backend.read(info.key)) == digest, f"{moment}: {info.key} holds other bytes"
    for name in store.repositories():
        for tag in store.tags(name):
            descriptor = store.get_tag(name, tag)
            assert descriptor is not None
            assert missing(store, descriptor) == [], f"{moment}: {name}:{tag} reaches missing blobs"
    for name in store.catalog_names():
        record = store.get_catalog(name)
        assert record is None or store.has_blob(record["index_digest"]), f"{moment}: {name}'s record lacks its image"


# A layer over one part (8 MiB): on S3 it goes up as a multipart upload to uploads/ (create, two parts,
# complete), then is copied under its digest and the temporary deleted; six writes where a small one has one.
TWO_PARTS_FILES = {**TINY_FILES, "model.safetensors": pseudo_random(9 * MiB, b"two parts")}


def kill_before(forker: Forker, store: Store, marker: str, args: list[str], nth: int, moment: str) -> None:
    """SIGKILL a fresh run of ``args`` just before its ``nth`` store write (under ``marker``), then check
    that ``store`` holds nothing half published."""
    paused = forker.start_paused(marker, args, nth, writes=True)
    assert paused.wait_until_paused(), paused.output()
    paused.kill()
    assert_nothing_half_published(store, moment)


def published(store: Store) -> dict[str, bytes]:
    """What a build publishes (blobs, tags, catalog records), by key: all that must converge byte for byte."""
    return {
        info.key: store.backend.read(info.key)
        for prefix in (BLOBS_PREFIX, "repositories/", "catalog/")
        for info in store.backend.list(prefix)
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_killed_before_each_write_then_run_again(tmp_path: Path, kind: str) -> None:
    """SIGKILL `modelyard build` just before each of its writes to the store, look at what the kill left,
    run the build again on it, and compare with a run never killed.

    The run never killed lists the writes: renames and removals locally; on S3 the PUT, POST and DELETE
    requests (objects, a multipart upload's creation, parts and completion, the copy under the digest,
    the temporary's deletion). Each is a kill point, in a fresh store, but for the site's files on S3:
    there only the first and the last (they are one kind of write, a page every build rewrites, and each
    of them is a kill point locally; an S3 point costs about 3 s of CPU, a local one under 1 s).
    """
    files = TWO_PARTS_FILES if kind == "s3" else TINY_FILES
    models = tmp_path / "models.yaml"
    models.write_text(f'models:\n  - name: Org/Tiny-Model\n    sha: "{TINY_REVISION}"\n')
    with (
        FixtureHub([FixtureRepo("Org/Tiny-Model", TINY_REVISION, files)]) as hub,
        a_store(kind, tmp_path) as (location, env),
        Forker(tmp_path, {**env, "HF_ENDPOINT": hub.url}) as forker,
    ):
        shared = open_store(location).backend  # one S3 client for all the stores: each costs 0.3 s of CPU

        def store_of(point: int) -> tuple[Store, str, list[str]]:
            """A fresh store for a kill point, the marker all its writes name, the build's arguments."""
            if not isinstance(shared, S3Backend):
                where = f"{location}-{point}"
                store, marker = open_store(where), f"{where}/"
            else:
                shared.client.create_bucket(Bucket=f"point-{point}")  # moto lists a prefix in time of the bucket
                where = f"s3://point-{point}/store"
                store, marker = Store(S3Backend.from_url(where, shared.client)), f" /point-{point}/store/"
            args = [
                "build",
                "--all",
                "--models",
                str(models),
                "--store",
                where,
                "--cache-dir",
                str(tmp_path / f"c{point}"),
            ]
            return store, marker, args

        uncut, marker, args = store_of(0)
        code, output, events = forker.events(marker, args, writes=True)
        assert code == 0, output
        # "rename KEY", "remove KEY" or "METHOD KEY": what each write does, to which key of the store
        writes = [f"{event.split()[0]} {event.split(marker, 1)[1].split()[0].split('?')[0]}" for event in events]
        kinds = {write.split("/")[0] for write in writes}
        assert kinds >= {"rename blobs", "rename repositories", "rename catalog", "rename site"} or kinds >= {
            *("POST uploads", "PUT uploads", "DELETE uploads"),  # the layer's multipart upload, then its temporary
            *("PUT blobs", "PUT repositories", "PUT catalog", "PUT site"),
        }, writes
        expected, site = published(uncut), {info.key for info in uncut.backend.list("site/")}
        record, latest = uncut.get_catalog(NAME), uncut.get_tag(NAME, "latest")
        assert record is not None and latest is not None and record["index_digest"] == latest.digest and site

        site_writes = [nth for nth, write in enumerate(writes, 1) if " site/" in write]
        for nth in range(1, len(writes) + 1):
            if kind == "s3" and nth in site_writes[1:-1]:
                continue
            store, marker, args = store_of(nth)
            moment = f"killed before write {nth} of {len(writes)} (in the run never killed: {writes[nth - 1]})"
            kill_before(forker, store, marker, args, nth, moment)
            code, output = forker.run(args)
            assert code == 0, f"{moment}, the build run again failed:\n{output}"
            # Converged: what a run never killed leaves, byte for byte, the catalog record included.
            assert published(store) == expected, moment
            assert {info.key for info in store.backend.list("site/")} == site, moment
            # Left over, at most: locally nothing (the rerun swept what the dead writer held); on S3 temporaries
            # (a bucket cannot tell a dead writer from a slow one) that a sweep after the grace period removes.
            if kind == "local":
                assert list(store.backend.list("uploads/")) == [], moment
            sweep_uploads(store, now=time.time() + DEFAULT_GRACE)
            assert list(store.backend.list("uploads/")) == list(store.backend.incomplete_uploads()) == [], moment


def test_a_killed_layer_write_is_cleaned_by_the_next_build(tmp_path: Path) -> None:
    model = write_tree(tmp_path / "model", {"config.json": b"{}", "model.safetensors": os.urandom(24 * MiB)})
    store_root = tmp_path / "store"
    args = ["build", "--from-dir", str(model), "--name", "org/model", "--store", str(store_root)]
    # Stop it as the layer, complete and fsynced under uploads/, is about to be renamed under its digest.
    with paused_at("blobs/sha256/", args, tmp_path):
        (temporary,) = (store_root / "uploads").iterdir()
        assert temporary.stat().st_size > 24 * MiB
    assert temporary.exists()  # the kill left the layer-sized temporary behind

    rerun = modelyard(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 1 upload temporaries left by killed builds" in rerun.stderr
    assert list((store_root / "uploads").iterdir()) == []
    assert open_store(str(store_root)).get_tag("org/model", "latest") is not None


def test_a_multipart_copy_cut_short_is_swept_after_the_grace_period() -> None:
    # A layer over 5 GiB is copied to its digest key in parts: a kill during the copy leaves a
    # multipart upload under blobs/, never visible as an object, but stored (and billed).
    key = "blobs/sha256/" + "a" * 64
    with moto_s3():
        store = open_store("s3://models/copy")
        backend: S3Backend = store.backend  # type: ignore[assignment]
        backend.call("create_multipart_upload", key)
        (upload,) = backend.incomplete_uploads()
        assert upload.key == key
        assert sweep_uploads(store, now=upload.started + DEFAULT_GRACE / 2) == []  # it may be a copy going on
        removed = sweep_uploads(store, now=upload.started + DEFAULT_GRACE)
        assert [info.key for info in removed] == [key]
        assert list(backend.incomplete_uploads()) == [] and not store.has_blob("sha256:" + "a" * 64)


def test_gc_killed_before_each_removal_then_run_again(tmp_path: Path) -> None:
    """SIGKILL `modelyard gc` just before each blob or temporary it removes: what any tag or catalog record
    reaches stays whole, and running it again removes what a gc never killed removes."""
    template = tmp_path / "template"
    for version in (b"one", b"two"):  # the second image moves the tag: the first one's blobs are garbage
        model = write_tree(tmp_path / version.decode(), {"config.json": version, "weights.bin": version * 1000})
        built = modelyard(["build", "--from-dir", str(model), "--name", "org/model", "--store", str(template)])
        assert built.returncode == 0, built.stderr
    (template / "uploads" / "killed.part").write_bytes(b"a killed upload's temporary")  # no writer holds it
    before = published(open_store(str(template)))

    with Forker(tmp_path) as forker:

        def gc(point: int) -> tuple[Store, str, list[str]]:
            where = tmp_path / f"store-{point}"
            shutil.copytree(template, where)
            return open_store(str(where)), f"{where}/", ["gc", "--store", str(where), "--grace", "0s"]

        uncut, marker, args = gc(0)
        code, output, removals = forker.events(marker, args, writes=True)
        assert code == 0, output
        expected = published(uncut)
        assert len(expected) < len(before), removals  # the first image's blobs went, and the temporary:
        assert f"remove {template.parent}/store-0/uploads/killed.part" in removals
        assert list(uncut.backend.list("uploads/")) == []
        for nth in range(1, len(removals) + 1):
            store, marker, args = gc(nth)
            moment = f"gc killed before removal {nth} of {len(removals)} ({removals[nth - 1]})"
            kill_before(forker, store, marker, args, nth, moment)
            assert store.get_catalog("org/model") is not None, moment
            code, output = forker.run(args)
            assert code == 0, f"{moment}, gc run again failed:\n{output}"
            assert published(store) == expected and list(store.backend.list("uploads/")) == [], moment
