"""The other formats of a model: extra manifests over the one stored eStargz layer (DESIGN §4).

Each published image also gets a ModelKit manifest (KitOps) and a ModelPack manifest (CNCF, which
Docker Model Runner pulls too). Neither stores a byte of the model again: the ModelKit's one layer
is the eStargz blob itself, and the ModelPack's raw per-file layers are *virtual blobs* the registry
cuts out of that blob. Each format manifest names the image index as its ``subject``, so the
referrers API lists every format of a model, and has tags of its own: ``<tag>-modelkit`` and
``<tag>-modelpack`` beside the image's ``<tag>``.

This module holds what the formats share; :mod:`pipeline.oci.modelkit` and
:mod:`pipeline.oci.modelpack` build them.

Example::

    >>> format_tag("latest", MODELPACK)
    'latest-modelpack'
    >>> weight_format(["config.json", "model.safetensors", "onnx/model.onnx"])
    'safetensors'
    >>> ModelFacts(parameters=22_713_216, tensor_types=(("F32", 22_713_216), ("I64", 512))).precision
    'float32,int64'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.oci.image import Blob, Descriptor

MODELKIT = "modelkit"
MODELPACK = "modelpack"
FORMAT_NAMES = (MODELKIT, MODELPACK)  # also the tag suffixes, in publish order
MAX_FORMAT_SUFFIX = max(len(f"-{name}") for name in FORMAT_NAMES)

# Weight formats by file extension, in the order one is chosen when a repository holds several
# (Hugging Face repositories often carry safetensors, ONNX and PyTorch copies of the same weights).
WEIGHT_EXTENSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gguf", (".gguf",)),
    ("safetensors", (".safetensors",)),
    ("onnx", (".onnx", ".onnx_data")),
    ("pt", (".pt", ".pth", ".bin", ".ckpt")),
    ("keras", (".h5", ".keras")),
    ("flax", (".msgpack",)),
    ("tflite", (".tflite",)),
)

# Hugging Face's safetensors dtype names, as ModelPack spells precisions.
_PRECISIONS = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_SCALES = ((10**15, "Q"), (10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))


def format_tag(tag: str, name: str) -> str:
    """The tag of format ``name`` beside the image tag ``tag``: ``latest`` -> ``latest-modelkit``."""
    return f"{tag}-{name}"


def weight_format(paths: Iterable[str]) -> str:
    """The weight format of a repository (``gguf``, ``safetensors``, ``onnx``, ``pt``...), or '' if none."""
    names = [path.lower() for path in paths]
    for name, extensions in WEIGHT_EXTENSIONS:
        if any(path.endswith(extensions) for path in names):
            return name
    return ""


def is_weight(path: str) -> bool:
    return any(path.lower().endswith(extensions) for _, extensions in WEIGHT_EXTENSIONS)


@dataclass(frozen=True)
class ModelFacts:
    """What the formats' configs say about the model beyond provenance, where it is known."""

    weight_format: str = ""
    parameters: int | None = None  # total parameter count (the Hub's safetensors metadata)
    tensor_types: tuple[tuple[str, int], ...] = ()  # (safetensors dtype, parameter count), largest first

    @classmethod
    def of(cls, paths: Iterable[str], hub: Mapping[str, Any]) -> ModelFacts:
        """Facts from the file list and the Hub metadata of the catalog record (``parameters``, ``tensor_types``)."""
        parameters = hub.get("parameters")
        types = hub.get("tensor_types") or {}
        tensor_types = tuple(
            sorted(
                ((str(k), int(v)) for k, v in dict(types).items() if isinstance(v, int)),
                key=lambda item: (-item[1], item[0]),
            )
        )
        return cls(weight_format(paths), parameters if isinstance(parameters, int) else None, tensor_types)

    @property
    def param_size(self) -> str:
        """ModelPack's ``<count><scale>``: ``22.7M``, ``7.2B``; '' when unknown."""
        if not self.parameters or self.parameters <= 0:
            return ""
        for factor, letter in _SCALES:
            if self.parameters >= factor:
                return f"{self.parameters / factor:.1f}".removesuffix(".0") + letter
        return f"{self.parameters / 1000:.1f}K"

    @property
    def precision(self) -> str:
        """The precisions of the weights, most parameters first, comma-separated (ModelPack's spelling)."""
        names = [_PRECISIONS[dtype] for dtype, _ in self.tensor_types if dtype in _PRECISIONS]
        return ",".join(dict.fromkeys(names))


@dataclass(frozen=True)
class FormatManifest:
    """One format of an image: its config and manifest blobs, published after the image's own."""

    name: str  # MODELKIT or MODELPACK: also the tag suffix
    artifact_type: str
    config: Blob
    manifest: Blob

    @property
    def descriptor(self) -> Descriptor:
        """What a tag and a referrers listing point at."""
        plain = self.manifest.descriptor
        return Descriptor(plain.media_type, plain.digest, plain.size, artifact_type=self.artifact_type)

    def blobs_in_publish_order(self) -> list[Blob]:
        return [self.config, self.manifest]
