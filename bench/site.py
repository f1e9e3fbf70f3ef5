"""The catalog site: render time for 1,000 models, the index's weight for models.yaml, Lighthouse.

1. Render 1,000 synthetic models (cards of ~6 kB of Markdown, ~15 files each), in memory and into a
   local store, against an anchor measured in the same run: markdown-it-py rendering the same cards
   alone, the one cost no renderer can skip. Then the cost of one more model: a render of 1,001,
   and the re-render of the store after adding it (which writes only what changed).
2. The index page for the models of models/models.yaml (all published, with synthetic Hub data):
   HTML + the CSS and JavaScript it loads, gzip-compressed; and the search index it fetches on the
   first keystroke.
3. Lighthouse (npm, installed here into bench/out/node on first use) against `modelyard serve`, with
   Debian's Chromium (CHROME_PATH=/usr/bin/chromium): the four category scores of the index and a
   model page.

    ./dev bench site [--models 1000] [--workdir bench/out] [--no-lighthouse]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, print_table, require
from pipeline.models.file import load_models
from pipeline.site.card import _markdown, split_front_matter
from pipeline.site.catalog import catalog_entries
from pipeline.site.output import publish_site
from pipeline.site.render import SiteOptions, Templates, render_site
from pipeline.store import open_store
from pipeline.store.store import catalog_key

LIGHTHOUSE = "lighthouse@12.2.3"  # 12.3+ wants Node 22; Debian 12 has Node 18 and this machine 20
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
CHROME_FLAGS = "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update"
TASKS = [
    "fill-mask",
    "text-generation",
    "sentence-similarity",
    "image-classification",
    "automatic-speech-recognition",
    "feature-extraction",
    "text-classification",
    "token-classification",
    "translation",
    "zero-shot-classification",
]
LIBRARIES = ["transformers", "sentence-transformers", "diffusers", "timm", "open_clip", "peft", "gguf"]
LICENSES = ["apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "openrail", "llama2", "other"]
WORDS = [
    "model",
    "trained",
    "large",
    "corpus",
    "english",
    "text",
    "tokens",
    "embedding",
    "vector",
    "semantic",
    "search",
    "fine",
    "tuned",
    "dataset",
    "evaluation",
    "accuracy",
    "benchmark",
    "transformer",
    "attention",
    "layers",
    "hidden",
    "size",
    "vocabulary",
    "inference",
    "batch",
    "sequence",
    "length",
    "classification",
    "generation",
    "speech",
    "image",
    "pixels",
    "audio",
    "license",
    "usage",
    "limitations",
    "bias",
    "training",
    "procedure",
    "hyperparameters",
    "learning",
    "rate",
    "optimizer",
    "epochs",
    "hardware",
    "carbon",
    "emissions",
]


def synthetic_card(rng: random.Random, name: str) -> str:
    """A model card of about 6 kB: front matter, prose, a code block and a results table."""

    def prose(count: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(count)).capitalize() + "."

    parts = [f"---\nlicense: {rng.choice(LICENSES)}\nlanguage: [en]\ntags: [{rng.choice(TASKS)}]\n---\n", f"# {name}\n"]
    parts.append(f"{name} is a {prose(30)}\n")
    for section in ("Model description", "Intended uses", "Training data", "Evaluation"):
        parts.append(f"## {section}\n\n{prose(90)}\n\n- {prose(8)}\n- {prose(8)}\n")
    parts.append(f"```python\nfrom transformers import AutoModel\nmodel = AutoModel.from_pretrained('{name}')\n```\n")
    parts.append("| metric | value |\n|---|---|\n" + "".join(f"| {w} | {rng.random():.3f} |\n" for w in WORDS[:6]))
    return "\n".join(parts)


def synthetic_record(rng: random.Random, name: str) -> dict[str, Any]:
    weights = rng.randint(10**7, 5 * 10**10)
    files = [{"path": "model.safetensors", "size": weights, "sha256": f"{rng.getrandbits(256):064x}"}]
    for path in [
        "config.json",
        "README.md",
        "tokenizer.json",
        "vocab.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "generation_config.json",
        "1_Pooling/config.json",
        "onnx/model.onnx",
        "onnx/config.json",
        "modules.json",
        "merges.txt",
        ".gitattributes",
        "sentence_bert_config.json",
    ]:
        files.append({"path": path, "size": rng.randint(100, 5 * 10**6), "sha256": f"{rng.getrandbits(256):064x}"})
    files.sort(key=lambda f: f["path"])

    def digest() -> str:
        return f"sha256:{rng.getrandbits(256):064x}"

    revision = f"{rng.getrandbits(160):040x}"
    return {
        "name": name,
        "hf_id": name,
        "title": name,
        "source": f"https://huggingface.co/{name}",
        "revision": revision,
        "tags": ["latest", revision],
        "index_digest": digest(),
        "layer_digest": digest(),
        "layer_size": weights,
        "toc_digest": digest(),
        "diff_id": digest(),
        "platforms": ["linux/amd64", "linux/arm64"],
        "manifests": [{"platform": p, "digest": digest(), "size": 900} for p in ("linux/amd64", "linux/arm64")],
        "format_version": "2",
        "total_size": sum(f["size"] for f in files),
        "files": files,
        "license": rng.choice(LICENSES),
        "pipeline_tag": rng.choice(TASKS),
        "library_name": rng.choice(LIBRARIES),
        "hub_tags": [],
        "gated": rng.random() < 0.1,
        "languages": ["en"],
        "base_models": [],
        "parameters": weights // 2,
        "tensor_types": {"F16": weights // 2},
        "downloads": rng.randint(0, 10**7),
        "likes": rng.randint(0, 10**4),
        "card_data": {"license": "mit"},
        "published_at": "2026-11-30T12:00:00Z",
        "model_card": synthetic_card(rng, name),
    }


def synthetic_records(names: list[str]) -> dict[str, dict[str, Any]]:
    rng = random.Random(8)
    return {name: synthetic_record(rng, name) for name in names}


def timed(function: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def render_benchmark(count: int, workdir: Path) -> None:
    templates = Templates.load()
    names = [f"org{i % 50}/model-{i:04d}" for i in range(count + 1)]
    records = synthetic_records(names)
    first = {name: records[name] for name in names[:count]}
    cards = [split_front_matter(r["model_card"])[1] for r in first.values()]
    markdown = _markdown()
    options = SiteOptions("models.example.com")
    anchor_wall, anchor_cpu, _ = timed(lambda: [markdown.render(card) for card in cards])
    wall, cpu, files = timed(lambda: render_site(catalog_entries(first), options, templates))
    half = dict(list(first.items())[: count // 2])
    _, half_cpu, _ = timed(lambda: render_site(catalog_entries(half), options, templates))
    more_wall, more_cpu, _ = timed(lambda: render_site(catalog_entries(records), options, templates))

    store_dir = workdir / "site-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = open_store(str(store_dir))
    for name, record in first.items():
        store.backend.write(catalog_key(name), json.dumps(record).encode())
    full_wall, full_cpu, full = timed(lambda: publish_site(store, [], options, templates=templates))
    name = names[count]
    store.backend.write(catalog_key(name), json.dumps(records[name]).encode())
    again_wall, again_cpu, again = timed(lambda: publish_site(store, [], options, templates=templates))

    size = sum(len(c) for c in cards) / count / 1000
    print(f"\nrendering {count:,} synthetic models ({size:.1f} kB of Markdown each); ratios of CPU time:")
    print_table(
        ["what", "wall s", "CPU s", "vs anchor"],
        [
            ["anchor: markdown-it-py alone, every card", f"{anchor_wall:.2f}", f"{anchor_cpu:.2f}", "1.00x"],
            [
                f"render_site, {count:,} models ({len(files):,} files, {sum(map(len, files.values())) / 1e6:.1f} MB)",
                f"{wall:.2f}",
                f"{cpu:.2f}",
                f"{cpu / anchor_cpu:.2f}x",
            ],
            [
                f"into a fresh local store ({full.written:,} files written, fsynced)",
                f"{full_wall:.2f}",
                f"{full_cpu:.2f}",
                f"{full_cpu / anchor_cpu:.2f}x",
            ],
            [f"render {count + 1:,}", f"{more_wall:.2f}", f"{more_cpu:.2f}", f"{more_cpu / anchor_cpu:.2f}x"],
            [
                f"one more model into that store ({again.written} files written)",
                f"{again_wall:.2f}",
                f"{again_cpu:.2f}",
                f"{again_cpu / anchor_cpu:.2f}x",
            ],
        ],
    )
    slope = (cpu - half_cpu) / (count - count // 2) * 1000
    print(f"one more model costs {slope:.2f} ms of CPU (the slope from {count // 2:,} to {count:,} models)")


def index_weight(models_file: Path) -> None:
    specs = load_models(models_file)
    records = synthetic_records([spec.repository for spec in specs])
    for spec in specs:
        records[spec.repository] |= {"hf_id": spec.hf_id, "revision": spec.revision}
    files = render_site(catalog_entries(records, specs), SiteOptions("models.example.com"), Templates.load())
    index = files["index.html"].decode()
    loaded = ["index.html", *(path for path in re.findall(r'(?:href|src)="(assets/[^"]+\.(?:css|js))"', index))]
    rows = [[path, f"{len(files[path]):,}", f"{len(gzip.compress(files[path], 9)):,}"] for path in loaded]
    total = sum(len(gzip.compress(files[path], 9)) for path in loaded)
    search = files["api/search.json"]
    print(f"\nthe index page for the {len(specs)} models of {models_file.relative_to(ROOT)}, all published:")
    print_table(
        ["file", "bytes", "gzip -9"],
        [*rows, ["total loaded with the page", "", f"{total:,} ({total / 150_000:.0%} of 150 kB)"]],
    )
    print(
        f"fetched on the first search keystroke: api/search.json {len(search):,} bytes,",
        f"{len(gzip.compress(search, 9)):,} gzipped",
    )


def lighthouse(workdir: Path, models_file: Path) -> None:
    node_dir = workdir / "node"
    binary = node_dir / "node_modules" / ".bin" / "lighthouse"
    if not binary.exists():
        print(f"\ninstalling {LIGHTHOUSE} into {node_dir} (first run only) ...", flush=True)
        node_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [require("npm"), "install", "--prefix", str(node_dir), "--no-audit", "--no-fund", "-E", LIGHTHOUSE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    specs = load_models(models_file)
    store_dir = workdir / "lighthouse-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = open_store(str(store_dir))
    for name, record in synthetic_records([spec.repository for spec in specs]).items():
        store.backend.write(catalog_key(name), json.dumps(record).encode())
    publish_site(store, specs, SiteOptions())
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(store_dir), "--port", "0", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        url = ""
        while not url:
            line = serve.stderr.readline()
            if not line:
                raise SystemExit("modelyard serve did not start")
            if line.startswith("serving ") and " on http://" in line:
                url = line.split(" on ", 1)[1].split()[0]
        rows = []
        for label, path in (("index", "/"), ("model page", f"/{specs[0].repository}/")):
            scores = run_lighthouse(binary, url + path, workdir)
            rows.append([label, *(f"{scores[c]:.0f}" for c in CATEGORIES)])
        print("\nLighthouse (mobile, simulated throttling), Debian Chromium:")
        print_table(["page", *CATEGORIES], rows)
    finally:
        serve.terminate()
        serve.wait()


def run_lighthouse(binary: Path, url: str, workdir: Path) -> dict[str, float]:
    report = workdir / "lighthouse.json"
    env = {**os.environ, "CHROME_PATH": "/usr/bin/chromium"}
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                str(binary),
                url,
                "--quiet",
                "--output=json",
                f"--output-path={report}",
                f"--only-categories={','.join(CATEGORIES)}",
                f"--chrome-flags={CHROME_FLAGS} --user-data-dir={profile}",
            ],
            check=True,
            env=env,
        )
    result = json.loads(report.read_text())
    return {c: result["categories"][c]["score"] * 100 for c in CATEGORIES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench site", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000, help="synthetic models to render (default: 1000)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out", help="default: bench/out")
    parser.add_argument("--no-lighthouse", action="store_true", help="skip Lighthouse (needs npm and chromium)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    render_benchmark(args.models, args.workdir)
    models_file = ROOT / "models" / "models.yaml"
    index_weight(models_file)
    if not args.no_lighthouse:
        require("/usr/bin/chromium")
        lighthouse(args.workdir, models_file)
