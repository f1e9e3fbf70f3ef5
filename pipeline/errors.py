"""The errors modelyard raises on purpose. Each names what was wrong and where.

Everything derives from :class:`ModelyardError`, so the CLI can print any of them as one clear line
and exit non-zero, while a bug (any other exception) still shows its traceback.

Example::

    try:
        build_from_dir(...)
    except IntegrityError as err:      # a downloaded file is not what the Hub says
        ...
    except ModelyardError as err:      # anything else modelyard diagnosed
        print(f"error: {err}")
"""

from __future__ import annotations


class ModelyardError(Exception):
    """Base of every error modelyard diagnoses itself."""


class ModelsFileError(ModelyardError):
    """``models.yaml`` is invalid. ``problems`` holds every problem, each with file:line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class InvalidNameError(ModelyardError):
    """A repository name, tag or digest does not follow the OCI distribution-spec grammar."""


class LayerInputError(ModelyardError):
    """The files given to the layer writer cannot become a layer (bad path, unsupported file type)."""


class SourceChangedError(LayerInputError):
    """A file changed size while it was being read; the layer would not match what was listed."""


class IntegrityError(ModelyardError):
    """Content does not match the digest it must have."""


class StoreError(ModelyardError):
    """The store could not be read or written."""


class NotFoundError(StoreError):
    """A blob, tag or record is not in the store."""


class MissingStoreError(StoreError):
    """The store itself does not exist: a mistyped ``--store``, a bucket never created."""


class HubError(ModelyardError):
    """Hugging Face refused or failed a request (not found, gated, network)."""


class MissingRepoError(HubError):
    """The Hub has no such repository (or it is private and the token cannot see it, or it was disabled)."""


class MissingRevisionError(HubError):
    """The repository has no such revision or branch."""


class GatedModelError(HubError):
    """The repository is gated: its files need a token of an account that accepted its conditions."""


class HubUnavailableError(HubError):
    """The Hub could not be reached or kept failing (network, timeouts, 429, 5xx) through every retry."""
