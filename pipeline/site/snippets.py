"""The ready-to-paste snippets of a model page: Dockerfile lines, a Kubernetes Pod, skopeo, oras, podman.

A snippet is a sequence of parts: text, the registry host, and flags that only a plain-HTTP registry
needs. The page marks the host and those flags, so that when the site does not know its registry host
(``modelyard site`` without ``--registry-host``) the page's script can put in the host it is served
from, and drop the plain-HTTP flags under HTTPS. :meth:`Snippet.text` gives the final text.

Example::

    >>> entry = ModelEntry(name="org/model", status="published", tags=("latest",), index_digest="sha256:ab")
    >>> copy_from(entry).text("registry.example.com", insecure=False)
    'COPY --from=registry.example.com/org/model / /models/model/'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.site.catalog import ModelEntry

LOOPBACK = re.compile(r"(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?")
MODEL_ROOT = "/models"  # where the snippets put a model inside the image


class Host:
    """Stands for the registry host in a snippet."""


class Insecure(str):
    """Text a plain-HTTP registry needs (``--tls-verify=false``), dropped under HTTPS."""

    __slots__ = ()


HOST = Host()
Part = str | Host


@dataclass(frozen=True)
class Snippet:
    key: str  # a stable id, for the page and the tests
    title: str
    language: str  # dockerfile, yaml, shell
    parts: tuple[Part, ...]
    note: str = ""

    def text(self, host: str, insecure: bool) -> str:
        """The snippet as a person copies it."""
        out = []
        for part in self.parts:
            if isinstance(part, Host):
                out.append(host)
            elif isinstance(part, Insecure):
                out.append(part if insecure else "")
            else:
                out.append(part)
        return "".join(out)


def is_loopback(host: str) -> bool:
    """A registry on this machine, which speaks plain HTTP (``modelyard serve``)."""
    return LOOPBACK.fullmatch(host) is not None


def model_dir(entry: ModelEntry) -> str:
    return f"{MODEL_ROOT}/{entry.name.rsplit('/', 1)[-1]}"


def image_ref(entry: ModelEntry) -> tuple[Part, ...]:
    """``HOST/name`` plus ``:tag`` unless the tag is ``latest`` (which every client assumes)."""
    return (HOST, f"/{entry.name}" + ("" if entry.tag == "latest" else f":{entry.tag}"))


def copy_from(entry: ModelEntry) -> Snippet:
    """``COPY --from`` of the whole model."""
    return Snippet(
        "copy-all",
        "Dockerfile: the whole model",
        "dockerfile",
        ("COPY --from=", *image_ref(entry), f" / {model_dir(entry)}/"),
    )


def copy_file(entry: ModelEntry, path: str) -> Snippet:
    """``COPY --from`` of one file, to the same path under the model's folder."""
    return Snippet(
        f"copy-file:{path}",
        f"Dockerfile: one file ({path})",
        "dockerfile",
        ("COPY --from=", *image_ref(entry), f" /{path} {model_dir(entry)}/{path}"),
    )


def snippets(entry: ModelEntry) -> list[Snippet]:
    """Every snippet of a published model's page, in the order shown."""
    pinned_digest: tuple[Part, ...] = (HOST, f"/{entry.name}@{entry.index_digest}")
    revision_tag = entry.revision if entry.revision in entry.tags else ""
    result = [copy_from(entry)]
    example = _example_file(entry)
    if example:
        result.append(copy_file(entry, example))
    result.append(
        Snippet(
            "copy-digest",
            "Dockerfile: pinned by digest",
            "dockerfile",
            ("COPY --from=", *pinned_digest, f" / {model_dir(entry)}/"),
            note="The digest names these exact bytes: the build can never get anything else.",
        )
    )
    if revision_tag:
        result.append(
            Snippet(
                "copy-revision",
                "Dockerfile: pinned by Hugging Face revision",
                "dockerfile",
                ("COPY --from=", HOST, f"/{entry.name}:{revision_tag} / {model_dir(entry)}/"),
            )
        )
    result += [
        Snippet("pod", "Kubernetes Pod with an image volume (1.31+)", "yaml", _pod(entry, pinned_digest)),
        Snippet(
            "skopeo",
            "skopeo: copy the image to a local OCI layout",
            "shell",
            (
                "skopeo copy",
                Insecure(" --src-tls-verify=false"),
                " docker://",
                *image_ref(entry),
                f" oci:{_basename(entry)}:{entry.tag}",
            ),
        ),
        _oras(entry),
        Snippet(
            "podman",
            "podman: pull the image",
            "shell",
            ("podman pull", Insecure(" --tls-verify=false"), " ", *image_ref(entry)),
        ),
    ]
    modelkit = format_ref(entry, "modelkit")
    if modelkit:
        result.append(
            Snippet(
                "kit",
                "KitOps: unpack the ModelKit",
                "shell",
                ("kit unpack", Insecure(" --plain-http"), " ", *modelkit, f" -d {_basename(entry)}/"),
            )
        )
    modelpack = format_ref(entry, "modelpack")
    if modelpack:
        result.append(
            Snippet(
                "docker-model", "Docker Model Runner: pull the ModelPack", "shell", ("docker model pull ", *modelpack)
            )
        )
    return result


def format_ref(entry: ModelEntry, name: str) -> tuple[Part, ...]:
    """``HOST/name:<tag>-<format>``, the tag of that format beside the entry's tag; () without that format."""
    for other in entry.formats:
        if other.name == name:
            index = entry.tags.index(entry.tag) if entry.tag in entry.tags else 0  # format tags follow tags' order
            return (HOST, f"/{entry.name}:{other.tags[index] if index < len(other.tags) else other.tags[0]}")
    return ()


def _oras(entry: ModelEntry) -> Snippet:
    """oras pull of the ModelPack (one titled layer per file); without one, the layer through any tar."""
    modelpack = format_ref(entry, "modelpack")
    if modelpack:
        return Snippet(
            "oras",
            "oras: pull the files (ModelPack)",
            "shell",
            ("oras pull", Insecure(" --plain-http"), " ", *modelpack, f" -o {_basename(entry)}/"),
        )
    return Snippet(
        "oras",
        "oras: fetch the layer and unpack the files",
        "shell",
        (
            f"mkdir -p {_basename(entry)} && oras blob fetch",
            Insecure(" --plain-http"),
            " --output - ",
            HOST,
            f"/{entry.name}@{entry.layer_digest} | tar -xzf - -C {_basename(entry)}/",
        ),
        note="The layer is a plain tar+gzip: any tar reads it. (oras pull skips layers without a file name.)",
    )


def _example_file(entry: ModelEntry) -> str:
    paths = [f.path for f in entry.files]
    for preferred in ("config.json", "tokenizer.json", "README.md"):
        if preferred in paths:
            return preferred
    return paths[0] if paths else ""


def _basename(entry: ModelEntry) -> str:
    return entry.name.rsplit("/", 1)[-1]


def _pod(entry: ModelEntry, reference: tuple[Part, ...]) -> tuple[Part, ...]:
    name = re.sub(r"[^a-z0-9-]+", "-", _basename(entry)).strip("-")[:63].strip("-") or "model"
    return (
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  containers:\n"
        "    - name: app\n"
        "      image: python:3.12-slim\n"
        '      command: ["sleep", "infinity"]\n'
        "      volumeMounts:\n"
        "        - name: model\n"
        f"          mountPath: {model_dir(entry)}\n"
        "          readOnly: true\n"
        "  volumes:\n"
        "    - name: model\n"
        "      image:\n"
        "        reference: ",
        *reference,
        "\n        pullPolicy: IfNotPresent\n",
    )
