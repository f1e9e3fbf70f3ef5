"""Names: OCI repository names and tags (distribution-spec grammar) and Hugging Face ids.

A Hugging Face id becomes an OCI repository name by lower-casing it (OCI names must be lowercase;
HF ids are case-insensitive). Names become paths in the store, so they are checked before any use.

Example::

    >>> repository_name("sentence-transformers/all-MiniLM-L6-v2")
    'sentence-transformers/all-minilm-l6-v2'
    >>> is_tag("latest"), is_tag("-bad")
    (True, False)
"""

from __future__ import annotations

import re

from pipeline.errors import InvalidNameError

# distribution-spec: <name> components and tags
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
MAX_TAG_LENGTH = 128
TAG_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_NAME_LENGTH = 255  # what Docker Hub and distribution enforce for the whole name

# Hugging Face repo ids: an optional namespace, then the repo name.
HF_ID_PATTERN = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*")
REVISION_PATTERN = re.compile(r"[0-9a-f]{40}")


def is_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.fullmatch(name) is not None


def is_tag(tag: str) -> bool:
    return TAG_PATTERN.fullmatch(tag) is not None


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid OCI repository name, else raise :class:`InvalidNameError`."""
    if not is_name(name):
        raise InvalidNameError(
            f"{name!r} is not a valid OCI repository name: lowercase letters and digits in '/'-separated "
            "components, each joined by '.', '_', '__' or dashes, at most 255 characters"
        )
    return name


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise InvalidNameError(
            f"{tag!r} is not a valid OCI tag: up to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        )
    return tag


def repository_name(hf_id: str) -> str:
    """The OCI repository name of a Hugging Face id: lower-cased and checked."""
    if HF_ID_PATTERN.fullmatch(hf_id) is None:
        raise InvalidNameError(f"{hf_id!r} is not a Hugging Face repo id (expected 'org/name' or 'name')")
    return check_name(hf_id.lower())
