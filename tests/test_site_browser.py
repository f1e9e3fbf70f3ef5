"""The catalog site in a real browser: Debian's Chromium driven by Playwright, against `modelyard serve`.

The store is built by `modelyard build` from the fixture Hub (so `build` renders the site, as in
production): the real MiniLM, two small synthetic models, one whose download is corrupted (status
"failed"), and one in the models file that is never built. Every page a test opens is watched: a
console error, an uncaught exception, or a request to anything but 127.0.0.1 fails the test.
Screenshots go to build/site-screenshots/ (the path is printed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.oci.image import MEDIA_TYPE_INDEX
from tests.conftest import ROOT, require_tool, run
from tests.fixture_hub import MINILM_ID, MINILM_REVISION, FixtureHub, FixtureRepo, minilm_directory, minilm_repo
from tests.registry_fixtures import RunningRegistry, running_registry

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]  # fmt: skip
SCREENSHOTS = ROOT / "build" / "site-screenshots"
MINILM = MINILM_ID.lower()
TINY, VISION, BROKEN, NEVER = "acme/tiny-gen", "acme/vision-small", "acme/broken", "acme/never-built"


def safetensors(shape: tuple[int, int], dtype: str = "F16") -> bytes:
    """A valid safetensors file: the Hub (and the fixture hub) count its parameters from the header."""
    size = shape[0] * shape[1] * 2
    header = json.dumps({"w": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, size]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(range(256)) * (size // 256)


def card(front: str, text: str) -> bytes:
    return f"---\n{front}\n---\n# Model\n\n{text}\n".encode()


REPOS = [
    minilm_repo(),
    FixtureRepo(
        "Acme/Tiny-Gen",
        "a1" * 20,
        {
            "config.json": b'{"model_type": "gpt2"}',
            "model.safetensors": safetensors((64, 32)),
            "README.md": card(
                "license: mit\npipeline_tag: text-generation\nlibrary_name: transformers\nlanguage: en",
                "A tiny text generator that writes limericks about <b>quokkas</b>.",
            ),
        },
        downloads=4321,
        likes=12,
    ),
    FixtureRepo(
        "Acme/Vision-Small",
        "b2" * 20,
        {
            "config.json": b'{"model_type": "vit"}',
            "weights/model.bin": os.urandom(3 * 1024 * 1024),
            "README.md": card(
                "license: apache-2.0\npipeline_tag: image-classification\nlibrary_name: timm",
                "Classifies photographs of birds into two hundred species.",
            ),
        },
        downloads=99,
        likes=1,
    ),
    FixtureRepo("Acme/Broken", "c3" * 20, {"config.json": b"{}", "broken.bin": b"z" * 4096}),
]
MODELS_YAML = "models:\n" + "".join(
    f"  - name: {hf_id}\n    sha: {revision}\n"
    for hf_id, revision in [(r.hf_id, r.revision) for r in REPOS] + [("Acme/Never-Built", "d4" * 20)]
)


@dataclass
class Catalog:
    registry: RunningRegistry
    store: Path
    work: Path

    @property
    def url(self) -> str:
        return self.registry.url


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """`modelyard build` (which renders the site) from the fixture Hub, then `modelyard serve`."""
    work = tmp_path_factory.mktemp("site-browser")
    models = work / "models.yaml"
    models.write_text(MODELS_YAML)
    store = work / "store"
    with FixtureHub(REPOS) as hub:
        hub.faults.corrupt.add("broken.bin")
        only = [r.hf_id for r in REPOS]
        build = subprocess.run(
            [sys.executable, "-m", "pipeline", "build", "--models", str(models), "--store", str(store),
             "--cache-dir", str(work / "cache"), "--retries", "0", "--only", *only],
            env={**os.environ, "HF_ENDPOINT": hub.url}, capture_output=True, text=True,
        )  # fmt: skip
    assert build.returncode == 1, build.stderr  # acme/broken failed, the others were built
    assert "site: 5 models" in build.stderr, build.stderr  # and the build rendered the site
    with running_registry(str(store), work / "serve") as registry:
        yield Catalog(registry, store, work)


@dataclass
class Watched:
    """Pages whose console errors, uncaught exceptions and off-machine requests are collected."""

    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def watched() -> Iterator[Watched]:
    seen = Watched()
    yield seen
    assert seen.errors == [], "console errors or uncaught exceptions"
    assert seen.outside == [], "requests that left 127.0.0.1"


def open_context(browser: Any, watched: Watched, **options: Any) -> Any:
    context = browser.new_context(**options)

    def route(route: Any) -> None:
        if urlsplit(route.request.url).hostname != "127.0.0.1":
            watched.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)

    def watch(page: Any) -> None:
        page.on("console", lambda m: watched.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: watched.errors.append(f"{page.url}: {e}"))

    context.on("page", watch)
    return context


def visible_names(page: Any) -> list[str]:
    return page.eval_on_selector_all("#models > li:not([hidden])", "items => items.map(li => li.dataset.name)")


FILTERS = [
    ("q", "quokkas", [TINY]),  # a word of the card only (it is in no name)
    ("q", "minilm", [MINILM]),
    ("task", "image-classification", [VISION]),
    ("library", "transformers", [TINY]),
    ("license", "apache-2.0", [MINILM, VISION]),
    ("size", "m", [MINILM]),  # 10 MB to 100 MB
    ("params", "s", [TINY]),  # under 10M; unknown counts are left out
]


def test_search_and_each_filter_narrow_the_list_and_survive_a_reload(
    catalog: Catalog, browser: Any, watched: Watched
) -> None:
    page = open_context(browser, watched).new_page()
    page.goto(catalog.url + "/")
    everything = sorted([MINILM, TINY, VISION, BROKEN, NEVER])
    assert visible_names(page) == everything
    for field_name, value, expected in FILTERS:
        control = page.locator(f"#f-{field_name}")
        if field_name == "q":
            control.fill(value)
        else:
            control.select_option(value)
        page.wait_for_function(f"() => location.search.includes('{field_name}={value}')")
        assert sorted(visible_names(page)) == sorted(expected), (field_name, value)
        assert page.locator("#count").inner_text() == f"{len(expected)} of 5 models"
        page.reload()  # the URL carries the filters: a shared link shows the same list
        page.wait_for_function("() => document.querySelectorAll('#models > li:not([hidden])').length < 5")
        assert sorted(visible_names(page)) == sorted(expected), (field_name, value, "after a reload")
        assert control.input_value() == value
        page.locator("button[type=reset]").click()
        page.wait_for_function("() => !location.search")
        assert visible_names(page) == everything
    page.goto(catalog.url + "/?license=apache-2.0&q=birds")  # filters combine
    assert visible_names(page) == [VISION]


def test_sorting_and_statuses(catalog: Catalog, browser: Any, watched: Watched) -> None:
    page = open_context(browser, watched).new_page()
    page.goto(catalog.url + "/?sort=size")
    assert visible_names(page)[:3] == [MINILM, VISION, TINY]  # largest first, unknown sizes last
    status = {
        li: page.locator(f'#models > li[data-name="{li}"] .status').inner_text() for li in (MINILM, BROKEN, NEVER)
    }
    assert status == {MINILM: "published", BROKEN: "failed", NEVER: "not yet built"}
    page.click(f'a[href="{BROKEN}/"]')
    failure = json.loads((catalog.store / "failures" / f"{BROKEN}.json").read_text())
    assert "The last build failed" in page.inner_text("main") and failure["error"] in page.inner_text("main")
    page.goto(catalog.url + f"/{NEVER}")  # no trailing slash, as in a Dockerfile: redirected to the page
    assert page.url.endswith(f"/{NEVER}/") and "Not built yet" in page.inner_text("main")


def test_a_copied_snippet_is_exact_and_buildah_runs_it(
    catalog: Catalog, browser: Any, watched: Watched, tmp_path: Path
) -> None:
    context = open_context(browser, watched)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=catalog.url)
    page = context.new_page()
    page.goto(catalog.url + f"/{MINILM}/")
    host = catalog.registry.host
    copied = {}
    for label, selector in (
        ("whole", "#s-copy-all button.copy"),
        ("file", 'button[aria-label="Copy the COPY --from line of 1_Pooling/config.json"]'),
        ("digest", "#s-copy-digest button.copy"),
    ):
        page.click(selector)
        copied[label] = page.evaluate("navigator.clipboard.readText()")
    assert copied["whole"] == f"COPY --from={host}/{MINILM} / /models/all-minilm-l6-v2/"
    assert copied["file"] == (
        f"COPY --from={host}/{MINILM} /1_Pooling/config.json /models/all-minilm-l6-v2/1_Pooling/config.json"
    )
    index = httpx.get(f"{catalog.url}/v2/{MINILM}/manifests/latest", headers={"Accept": MEDIA_TYPE_INDEX})
    assert (
        copied["digest"]
        == f"COPY --from={host}/{MINILM}@{index.headers['docker-content-digest']} / /models/all-minilm-l6-v2/"
    )
    rootfs = buildah(tmp_path, f"FROM scratch\n{copied['file']}\n")
    built = rootfs / "models/all-minilm-l6-v2/1_Pooling/config.json"
    assert built.read_bytes() == (minilm_directory() / "1_Pooling/config.json").read_bytes()
    page.click("#s-oras button.copy")
    oras_line = page.evaluate("navigator.clipboard.readText()")
    reference = f"{host}/{MINILM}:latest-modelpack"
    assert oras_line == f"oras pull --plain-http {reference} -o all-minilm-l6-v2/"
    import oras.client  # the oras CLI is not packaged for Debian: its Python client pulls the same reference

    pulled = oras.client.OrasClient(hostname=host, insecure=True).pull(target=reference, outdir=str(tmp_path / "oras"))
    assert {Path(p).relative_to(tmp_path / "oras").as_posix() for p in pulled} == {
        p.relative_to(minilm_directory()).as_posix() for p in minilm_directory().rglob("*") if p.is_file()
    }
    skopeo = require_tool("skopeo")
    page.click("#s-skopeo button.copy")
    command = page.evaluate("navigator.clipboard.readText()").split()
    assert command[:3] == ["skopeo", "copy", "--src-tls-verify=false"]  # plain HTTP here: the flag it needs
    run(skopeo, *command[1:], cwd=tmp_path)
    layout = json.loads((tmp_path / "all-minilm-l6-v2" / "index.json").read_text())
    assert layout["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"


def buildah(workdir: Path, dockerfile: str) -> Path:
    tool = require_tool("buildah")
    context = workdir / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    output = workdir / "rootfs"
    run(tool, "--storage-driver", "vfs", "--root", str(workdir / "root"), "--runroot", str(workdir / "runroot"),
        "build", "--isolation", "chroot", "--tls-verify=false", "--output", f"type=local,dest={output}", str(context))  # fmt: skip
    return output


def test_the_pages_numbers_and_digests_are_the_images(
    catalog: Catalog, browser: Any, watched: Watched, tmp_path: Path
) -> None:
    v2 = f"{catalog.url}/v2/{MINILM}"
    index_response = httpx.get(f"{v2}/manifests/latest", headers={"Accept": MEDIA_TYPE_INDEX})
    index = index_response.json()
    manifests = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
    manifest = httpx.get(f"{v2}/manifests/{index['manifests'][0]['digest']}").json()
    (layer,) = manifest["layers"]
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(httpx.get(f"{v2}/blobs/{layer['digest']}").content)
    files = {}
    with tarfile.open(blob, "r:gz") as archive:
        for member in archive:
            if member.isfile():
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                files[member.name] = (len(data), hashlib.sha256(data).hexdigest(), data)
    header = files["model.safetensors"][2]
    tensors = json.loads(header[8 : 8 + int.from_bytes(header[:8], "little")])
    parameters = sum(_product(t["shape"]) for k, t in tensors.items() if k != "__metadata__")

    page = open_context(browser, watched).new_page()
    page.goto(catalog.url + f"/{MINILM}/")
    rows = page.eval_on_selector_all(
        "table.files tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, Number(r.cells[1].dataset.bytes), r.cells[2].textContent])",
    )
    assert {path: (size, sha) for path, size, sha in rows} == {
        path: (size, sha) for path, (size, sha, _) in files.items()
    }
    digests = dict(
        page.eval_on_selector_all(
            ".digests div", "ds => ds.map(d => [d.querySelector('dt').textContent, d.querySelector('dd').textContent])"
        )
    )
    assert digests["Image index (all platforms)"] == index_response.headers["docker-content-digest"]
    assert {k.removeprefix("Manifest "): v for k, v in digests.items() if k.startswith("Manifest ")} == manifests
    assert digests[f"Layer (eStargz, {layer['size']:,} bytes)"] == layer["digest"]
    assert digests["Table of contents"] == layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"]
    facts = dict(
        page.eval_on_selector_all(
            ".fact-list div",
            "ds => ds.map(d => [d.querySelector('dt').textContent, d.querySelector('dd').textContent])",
        )
    )
    assert facts["Parameters"].endswith(f"({parameters:,})")
    total = sum(size for size, _, _ in files.values())
    assert f"({total:,} bytes)" in page.inner_text("#files + p")
    assert facts["License"] == "apache-2.0" and facts["Task"] == "sentence-similarity"
    hub_link = page.get_attribute(f'a[href^="https://huggingface.co/{MINILM_ID}"]', "href")
    assert hub_link == f"https://huggingface.co/{MINILM_ID}/tree/{MINILM_REVISION}"


def _product(shape: list[int]) -> int:
    result = 1
    for dimension in shape:
        result *= dimension
    return result


def test_everything_is_there_with_javascript_off(catalog: Catalog, browser: Any, watched: Watched) -> None:
    page = open_context(browser, watched, java_script_enabled=False).new_page()
    page.goto(catalog.url + "/?task=image-classification")
    assert len(visible_names(page)) == 5  # no script, no filtering: the whole list
    assert page.locator("#filters").is_hidden()
    page.click(f'a[href="{TINY}/"]')
    page.wait_for_load_state("load")  # a click waits for the page to start loading, not for its stylesheets
    assert page.url.endswith(f"/{TINY}/")
    text = page.inner_text("main")
    assert f"COPY --from=127.0.0.1:5000/{TINY} / /models/tiny-gen/" in text  # the documented fallback host
    assert "model.safetensors" in text and "Model card" in text and "quokkas" in text
    assert page.locator("button.copy").first.is_hidden()  # nothing that needs the script is offered


def test_keyboard_alone_reaches_everything_with_a_visible_focus(
    catalog: Catalog, browser: Any, watched: Watched
) -> None:
    context = open_context(browser, watched)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=catalog.url)
    page = context.new_page()
    page.goto(catalog.url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    outline = "getComputedStyle(document.activeElement).outlineStyle"
    assert page.evaluate(outline) != "none"  # focus is visible
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-q":
            break
    assert page.evaluate("document.activeElement.id") == "f-q" and page.evaluate(outline) != "none"
    page.keyboard.type("birds")
    page.wait_for_function("() => location.search.includes('q=birds')")
    assert visible_names(page) == [VISION]
    page.goto(catalog.url + f"/{TINY}/")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('copy')"):
            break
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.textContent === 'Copied'")
    assert (
        page.evaluate("navigator.clipboard.readText()")
        == f"COPY --from={catalog.registry.host}/{TINY} / /models/tiny-gen/"
    )


def test_the_404_page(catalog: Catalog, browser: Any, watched: Watched) -> None:
    page = open_context(browser, watched).new_page()
    response = page.goto(catalog.url + "/acme/no-such-model/")
    assert response.status == 404 and page.title().startswith("Not found")
    page.click("text=Browse all models")
    assert page.url == catalog.url + "/"
    watched.errors = [e for e in watched.errors if "404" not in e]  # the browser reports the 404 itself


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_and_screenshots(
    catalog: Catalog, browser: Any, watched: Watched, scheme: str
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    axe = Axe()
    pages = (("/", "index"), (f"/{MINILM}/", "model"), (f"/{BROKEN}/", "failed"))
    for width, device in ((1280, "desktop"), (360, "phone")):
        context = open_context(browser, watched, viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        for path, name in pages:
            page.goto(catalog.url + path)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}-{device}.png"), full_page=True)
            if device == "phone" and name != "model":
                continue  # the model page has the widest content: it stands for the phone layout
            violations = axe.run(page).response["violations"]
            serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations
                       if v["impact"] in ("serious", "critical")]  # fmt: skip
            assert serious == [], f"{path} ({scheme}, {device})"
        context.close()
    print(f"screenshots in {SCREENSHOTS}")
