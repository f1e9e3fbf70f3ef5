"""``models/models.yaml``: the curated list of models, its schema and its validation.

The file is reviewed in pull requests, so validation reports *every* problem at once, each with
``file:line`` and the field::

    models:
      - name: sentence-transformers/all-MiniLM-L6-v2   # Hugging Face repo id
        sha: 8b3219a92973c328a8e22fadcfa821b5dc75636a  # pinned revision: 40 lowercase hex
        tagAs: latest                                  # optional, default "latest"
        exclude: ["*.onnx", "openvino/*"]              # optional globs (fnmatch) on repo paths
        include: []                                    # optional; when given, only matching files
        branch: main                                   # optional: the branch `modelyard update` follows

Each image gets two tags: ``tagAs`` and the revision. Several entries may publish variants of one
revision (different ``include``/``exclude``, different ``tagAs``); the revision tag then belongs to
the first of them.

A value that must be a string is read as written when YAML would take it for a number or a date
(``sha: 0123...`` keeps its leading zero); only booleans, nulls, lists and mappings are refused. A list
with no entries (``models: []``) is refused: a curated file never means to build nothing. The file
is bounded (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, and :data:`MAX_NODES` once aliases are
expanded), so a huge or "billion laughs" document fails at once with a clear error.

Example::

    models = load_models("models/models.yaml")     # raises ModelsFileError listing every problem
    for model in models:
        print(model.repository, model.revision, model.tag)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline import names
from pipeline.errors import InvalidNameError, ModelsFileError, ModelyardError
from pipeline.oci.formats import FORMAT_NAMES, MAX_FORMAT_SUFFIX

DEFAULT_TAG = "latest"
_ENTRY_KEYS = {"name", "sha", "tagAs", "include", "exclude", "branch"}
# git check-ref-format, in short: no control characters, spaces, ~^:?*[\, "..", "@{" or "//"; no leading
# "-", "/" or ".", no trailing "/", "." or ".lock", not "@".
_BRANCH_PATTERN = re.compile(r"(?!-|/|\.|@$|.*(?:\.\.|@\{|//|/\.|\.lock$|[/.]$))[^\x00-\x20\x7f~^:?*\[\\]+")
MAX_FILE_BYTES = 1024 * 1024  # models.yaml holds ~110 models in 12 KB: this leaves room for ~9,000
MAX_DEPTH = 32  # the schema nests 4 levels; deeper is no models file (and would exhaust the stack)
MAX_NODES = 1_000_000  # YAML nodes once every alias is expanded: bounds the work of any check
# Plain scalars YAML would read as something else, though a string field means the text as written.
_AS_WRITTEN_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "timestamp")}


@dataclass(frozen=True)
class ModelSpec:
    """One entry of models.yaml."""

    hf_id: str  # as written, e.g. "sentence-transformers/all-MiniLM-L6-v2"
    revision: str  # 40-hex commit sha
    tag: str = DEFAULT_TAG
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    source: str = ""  # "file:line", for messages
    pin: bool = True  # publishes the revision tag: the first entry of its name and revision does
    branch: str | None = None  # the branch `modelyard update` follows (None: the repo's default branch)

    @property
    def tags(self) -> list[str]:
        """Its tag, and the 40-hex revision tag when it is the pin of its revision."""
        return [self.tag, self.revision] if self.pin else [self.tag]

    @property
    def repository(self) -> str:
        """The OCI repository name: the HF id lower-cased."""
        return names.repository_name(self.hf_id)

    def wants(self, path: str) -> bool:
        """Whether a file of the HF repo belongs in the image, by ``include`` then ``exclude``."""
        if self.include and not any(fnmatch.fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)


def select_models(models: list[ModelSpec], only: list[str]) -> list[ModelSpec]:
    """The models named by ``only`` (HF id or repository name, any case), or all of them when it is empty."""
    if not only:
        return models
    wanted = {name.lower() for name in only}
    chosen = [m for m in models if m.hf_id.lower() in wanted or m.repository in wanted]
    unknown = wanted - {m.hf_id.lower() for m in chosen} - {m.repository for m in chosen}
    if unknown:
        raise ModelyardError(f"--only: not in the models file: {', '.join(sorted(unknown))}")
    return chosen


def load_models(path: str | Path) -> list[ModelSpec]:
    """Read and validate a models file; raise :class:`ModelsFileError` with every problem found."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # never more: the path may be /dev/zero
    except OSError as err:
        raise ModelsFileError([f"{path}: cannot read: {err.strerror}"]) from err
    if len(data) > MAX_FILE_BYTES:
        raise ModelsFileError([_too_large(str(path))])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelsFileError([f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"]) from err
    return parse_models(text, str(path))


def parse_models(text: str, filename: str = "models.yaml") -> list[ModelSpec]:
    """Validate the text of a models file; ``filename`` only appears in messages."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise ModelsFileError([_too_large(filename)])
    checker = _Checker(filename)
    try:
        root = _BoundedLoader(text).get_single_node()
    except _TooComplex as err:
        raise ModelsFileError([f"{filename}:{err.line}: {err}"]) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ModelsFileError([f"{filename}:{line}: not valid YAML: {err.problem}"]) from err
    models = checker.document(root)
    if checker.problems:
        # Stable: problems of one line keep the order they were found in.
        raise ModelsFileError([text for _, text in sorted(checker.problems, key=lambda problem: problem[0])])
    return models


def _too_large(filename: str) -> str:
    return (
        f"{filename}: larger than {MAX_FILE_BYTES:,} bytes, the limit of a models file "
        "(models.yaml holds ~110 models in 12 KB): is it the right file?"
    )


class _TooComplex(Exception):
    """The document is beyond what a models file can be: too deep, or too many nodes once aliases expand."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer, refusing documents nested too deep or expanding to too many nodes.

    Composing never expands an alias (it shares the anchored node), but anything that walks the tree
    does: a "billion laughs" of nine nested aliases is 10^9 nodes. Each node's expanded size is summed
    from its children's as it completes, so the refusal costs as little as the composing.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes under it, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        alias = isinstance(event, yaml.AliasEvent)
        if self._depth >= MAX_DEPTH:
            raise _TooComplex(f"nested deeper than {MAX_DEPTH} levels: not a models file", line)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        size = self._sizes.get(id(node))
        if size is None:
            if alias:
                raise _TooComplex("an alias refers to a node that contains it", line)
            size = 1 + sum(self._sizes[id(child)] for child in _children(node))
            self._sizes[id(node)] = size
        if size > MAX_NODES:
            raise _TooComplex(f"aliases expand this document beyond {MAX_NODES:,} nodes: not a models file", line)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


class _Checker:
    """Walks the YAML node tree (which keeps line numbers) and collects problems."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[tuple[int, str]] = []  # (line, "file:line: field: message")

    def problem(self, node: yaml.Node | None, field: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append((line, f"{self.filename}:{line}: {field}: {message}"))

    def mapping(self, node: yaml.Node, field: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, field, f"expected a mapping, got {_kind(node)}")
            return None
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.problem(key, field, "keys must be plain strings")
                continue
            if key.value in result:
                self.problem(key, f"{field}.{key.value}", "appears twice")
            result[key.value] = (key, value)
        return result

    def document(self, root: yaml.Node | None) -> list[ModelSpec]:
        if root is None:
            self.problem(None, "models", "the file is empty; expected a top-level 'models:' list")
            return []
        top = self.mapping(root, "(top level)")
        if top is None:
            return []
        for key, (key_node, _) in top.items():
            if key != "models":
                self.problem(key_node, key, "unknown top-level key (expected only 'models')")
        if "models" not in top:
            self.problem(root, "models", "missing: expected a top-level 'models:' list")
            return []
        models_node = top["models"][1]
        if not isinstance(models_node, yaml.SequenceNode):
            self.problem(models_node, "models", f"expected a list of entries, got {_kind(models_node)}")
            return []
        if not models_node.value:
            self.problem(models_node, "models", "the list is empty: add at least one entry (name and sha)")
            return []
        entries = [(node, self.entry(node, f"models[{i}]")) for i, node in enumerate(models_node.value)]
        valid = [(node, model) for node, model in entries if model is not None]
        self.duplicates(valid)
        return _mark_pins([model for _, model in valid])

    def entry(self, node: yaml.Node, field: str) -> ModelSpec | None:
        fields = self.mapping(node, field)
        if fields is None:
            return None
        hf_id = self.string(node, fields, "name", field, required=True)
        label = f"{field} ({hf_id})" if hf_id else field
        ok = True
        for key, (key_node, _) in fields.items():
            if key not in _ENTRY_KEYS:
                self.problem(key_node, f"{label}.{key}", f"unknown key (expected {', '.join(sorted(_ENTRY_KEYS))})")
                ok = False
        if hf_id is not None:
            try:
                names.repository_name(hf_id)
            except InvalidNameError as err:
                self.problem(fields["name"][1], f"{label}.name", str(err))
                ok = False
        revision = self.string(node, fields, "sha", label, required=True)
        if revision is not None and not names.REVISION_PATTERN.fullmatch(revision):
            self.problem(fields["sha"][1], f"{label}.sha", f"expected 40 lowercase hex characters, got {revision!r}")
            ok = False
        tag = self.string(node, fields, "tagAs", label, required=False)
        if tag is not None:
            if not names.is_tag(tag):
                self.problem(fields["tagAs"][1], f"{label}.tagAs", f"{tag!r} is not a valid OCI tag")
                ok = False
            elif names.REVISION_PATTERN.fullmatch(tag):
                self.problem(fields["tagAs"][1], f"{label}.tagAs", "a 40-hex tag is reserved for the revision tag")
                ok = False
            elif tag.endswith(tuple(f"-{name}" for name in FORMAT_NAMES)):
                reserved = ", ".join(f"-{name}" for name in FORMAT_NAMES)
                self.problem(fields["tagAs"][1], f"{label}.tagAs", f"tags ending in {reserved} name a tag's formats")
                ok = False
            elif len(tag) > names.MAX_TAG_LENGTH - MAX_FORMAT_SUFFIX:
                limit = names.MAX_TAG_LENGTH - MAX_FORMAT_SUFFIX
                why = f"at most {limit} characters, so that its format tag ({tag[:8]}...-modelpack) is a valid tag"
                self.problem(fields["tagAs"][1], f"{label}.tagAs", why)
                ok = False
        include = self.globs(fields, "include", label)
        exclude = self.globs(fields, "exclude", label)
        branch = self.string(node, fields, "branch", label, required=False)
        if branch is not None and not _BRANCH_PATTERN.fullmatch(branch):
            self.problem(fields["branch"][1], f"{label}.branch", f"{branch!r} is not a git branch name")
            ok = False
        if not ok or hf_id is None or revision is None or include is None or exclude is None:
            return None
        line = node.start_mark.line + 1
        source = f"{self.filename}:{line}"
        return ModelSpec(hf_id, revision, tag or DEFAULT_TAG, include, exclude, source, branch=branch)

    def string(
        self, entry: yaml.Node, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, field: str, *, required: bool
    ) -> str | None:
        if key not in fields:
            if required:
                self.problem(entry, f"{field}.{key}", "missing")
            return None
        node = fields[key][1]
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{field}.{key}", f"expected a string, got {_kind(node)}")
            return None
        if node.tag not in _AS_WRITTEN_TAGS:  # true/false/yes/no, null, or an explicit !!binary ...
            what = "nothing" if node.value == "" else repr(node.value)
            self.problem(node, f"{field}.{key}", f"expected a string, got {what} (quote it if you mean the text)")
            return None
        return str(node.value)

    def globs(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, field: str) -> tuple[str, ...] | None:
        if key not in fields:
            return ()
        node = fields[key][1]
        if not isinstance(node, yaml.SequenceNode) or not all(
            isinstance(item, yaml.ScalarNode) and item.value for item in node.value
        ):
            self.problem(node, f"{field}.{key}", "expected a list of glob patterns, like ['*.onnx', 'openvino/*']")
            return None
        return tuple(str(item.value) for item in node.value)

    def duplicates(self, models: list[tuple[yaml.Node, ModelSpec]]) -> None:
        seen: dict[tuple[str, str], ModelSpec] = {}
        for node, model in models:
            key = (model.repository, model.tag)
            if key in seen:
                self.problems.append(
                    (
                        node.start_mark.line + 1,
                        f"{model.source}: {model.hf_id}: same name and tag ({model.repository}:{model.tag}) "
                        f"as the entry at {seen[key].source}",
                    )
                )
            else:
                seen[key] = model


def _mark_pins(models: list[ModelSpec]) -> list[ModelSpec]:
    """Variants of one revision (say, one tag per weight format) share its revision tag: the first one has it."""
    seen: set[tuple[str, str]] = set()
    result = []
    for model in models:
        key = (model.repository, model.revision)
        result.append(model if key not in seen else dataclasses.replace(model, pin=False))
        seen.add(key)
    return result


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "nothing" if node.value == "" else f"{node.value!r}"
