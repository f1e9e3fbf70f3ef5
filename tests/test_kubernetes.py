"""deploy/kubernetes/ against the pinned Kubernetes v1.33 JSON schemas (strict: unknown fields fail), and together.

kubeconform is not packaged for Debian; the schemas it would use are committed (a subset, see
tests/kubernetes_schemas.py for where they come from) and checked with the jsonschema library.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from tests.conftest import ROOT
from tests.kubernetes_schemas import references

MANIFESTS = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT / "tests" / "k8s-schemas" / "v1.33.0"


def schema_name(manifest: dict[str, Any]) -> str:
    """kubeconform's naming: kind-group-version, the group's first label only (apps/v1 Deployment: deployment-apps-v1)."""
    group, _, version = manifest["apiVersion"].rpartition("/")
    parts = [manifest["kind"].lower(), group.split(".")[0], version] if group else [manifest["kind"].lower(), version]
    return "-".join(parts)


def validator(manifest: dict[str, Any]) -> jsonschema.protocols.Validator:
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    path = SCHEMAS / f"{schema_name(manifest)}.json"
    assert path.exists(), f"no pinned schema for {manifest['apiVersion']} {manifest['kind']}: add it to {SCHEMAS}"
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def problems(manifest: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(manifest).iter_errors(manifest)]


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler"])
def test_each_manifest_matches_its_schema(kind: str) -> None:
    assert problems(manifests()[kind]) == []


def test_the_schemas_are_strict_and_complete() -> None:
    deployment = manifests()["Deployment"]
    typo = copy.deepcopy(deployment)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert any("readinesProbe" in p for p in problems(typo))
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    assert problems(wrong_type) == ["spec.replicas: 'two' is not of type 'integer', 'null'"]
    # Every reference in the committed subset resolves inside it.
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())["$defs"]
    for schema in [*definitions.values(), *(json.loads(p.read_text()) for p in SCHEMAS.glob("[!_]*.json"))]:
        assert set(references(schema)) <= set(definitions)


def test_the_pieces_fit_together() -> None:
    found = manifests()
    deployment, service, autoscaler = found["Deployment"], found["Service"], found["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2  # one replica down (a rollout, a node) never empties the Service
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/", "port": "http"}
    assert container["resources"]["requests"]["cpu"]  # the autoscaler's utilization is relative to it
    # The image's own settings: its user and port.
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", containerfile, re.M)
    assert user is not None
    security = pod["spec"]["securityContext"]
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user.groups()
    assert f"MODELYARD_PORT={ports['http']}" in containerfile
