"""Registry errors as the distribution spec shapes them: a status and ``{"errors": [{code, message, detail}]}``.

Handlers raise :class:`RegistryError`; the app turns it into the JSON answer. Codes are the spec's,
plus distribution's RANGE_INVALID, PAGINATION_NUMBER_INVALID, UNAVAILABLE and UNKNOWN,
and NOT_FOUND for paths that are no endpoint at all.

Example::

    raise RegistryError.manifest_unknown("org/model", "latest")
"""

from __future__ import annotations

from typing import Any

from pipeline.oci.image import canonical_json

RETRY_AFTER_SECONDS = 5  # what a client should wait before asking again when the store is down


class RegistryError(Exception):
    """An answer other than success: HTTP status, spec code, message, optional detail and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.detail)

    # The errors handlers raise, by name.

    @classmethod
    def name_invalid(cls, name: str) -> RegistryError:
        return cls(400, "NAME_INVALID", "invalid repository name", {"name": _clip(name)})

    @classmethod
    def name_unknown(cls, name: str) -> RegistryError:
        return cls(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})

    @classmethod
    def digest_invalid(cls, digest: str) -> RegistryError:
        return cls(400, "DIGEST_INVALID", "invalid digest: only sha256:<64 lowercase hex>", {"digest": _clip(digest)})

    @classmethod
    def manifest_unknown(cls, name: str, reference: str) -> RegistryError:
        return cls(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": name, "reference": _clip(reference)})

    @classmethod
    def blob_unknown(cls, digest: str) -> RegistryError:
        return cls(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})

    @classmethod
    def range_invalid(cls, why: str) -> RegistryError:
        return cls(400, "RANGE_INVALID", f"invalid Range header: {why}")

    @classmethod
    def range_unsatisfiable(cls, size: int) -> RegistryError:
        return cls(
            416,
            "RANGE_INVALID",
            "requested range not satisfiable",
            {"size": size},
            {"Content-Range": f"bytes */{size}"},
        )

    @classmethod
    def pagination_invalid(cls, why: str) -> RegistryError:
        return cls(400, "PAGINATION_NUMBER_INVALID", f"invalid pagination: {why}")

    @classmethod
    def unsupported(
        cls, method: str, message: str = "this registry is read-only: only GET and HEAD are supported"
    ) -> RegistryError:
        return cls(405, "UNSUPPORTED", message, {"method": _clip(method)}, {"Allow": "GET, HEAD"})

    @classmethod
    def not_found(cls, why: str = "no such endpoint or file") -> RegistryError:
        return cls(404, "NOT_FOUND", why)

    @classmethod
    def bad_path(cls, why: str) -> RegistryError:
        return cls(400, "NAME_INVALID", why)

    @classmethod
    def unavailable(cls) -> RegistryError:
        # The cause goes to the log, never to the client: it may name buckets or endpoints.
        return cls(
            503,
            "UNAVAILABLE",
            "the store behind this registry is unavailable; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @classmethod
    def corrupt(cls, digest: str) -> RegistryError:
        return cls(500, "UNKNOWN", "stored content does not match its digest", {"digest": digest})


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    """The spec's error document, e.g. ``{"errors":[{"code":"BLOB_UNKNOWN","detail":...,"message":...}]}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return canonical_json({"errors": [error]})


def _clip(text: str, limit: int = 256) -> str:
    """Echo at most ``limit`` characters of client input back: enough to see the mistake."""
    return text if len(text) <= limit else text[:limit] + "…"
