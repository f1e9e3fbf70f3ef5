"""Counters the registry keeps, and their Prometheus text exposition (served at ``/metrics``).

Pulls are counted per repository and tag: a manifest GET by tag is where a pull starts (HEADs and
the follow-up GETs by digest are not pulls of a tag; they are counted per repository apart). Only
answered manifests count, so hostile requests cannot invent label values.

Example::

    metrics = Metrics()
    metrics.count_pull("org/model", "latest")
    print(metrics.render())   # modelyard_pulls_total{repository="org/model",tag="latest"} 1
"""

from __future__ import annotations

from collections import Counter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.pulls: Counter[tuple[str, str]] = Counter()
        self.pulls_by_digest: Counter[str] = Counter()
        self.responses: Counter[tuple[str, int]] = Counter()
        self.bytes_sent = 0

    def count_pull(self, repository: str, tag: str) -> None:
        self.pulls[repository, tag] += 1

    def count_pull_by_digest(self, repository: str) -> None:
        self.pulls_by_digest[repository] += 1

    def count_response(self, method: str, status: int, body_bytes: int) -> None:
        # Methods come from clients: any but the two we serve are lumped, so labels stay few.
        self.responses[method if method in ("GET", "HEAD") else "OTHER", status] += 1
        self.bytes_sent += body_bytes

    def render(self) -> str:
        """The Prometheus text format (version 0.0.4)."""
        lines = [
            "# HELP modelyard_pulls_total Manifest GETs by tag: pulls per repository and tag.",
            "# TYPE modelyard_pulls_total counter",
        ]
        for (repository, tag), count in sorted(self.pulls.items()):
            lines.append(f"modelyard_pulls_total{_labels(repository=repository, tag=tag)} {count}")
        lines += [
            "# HELP modelyard_digest_pulls_total Manifest GETs by digest, per repository.",
            "# TYPE modelyard_digest_pulls_total counter",
        ]
        for repository, count in sorted(self.pulls_by_digest.items()):
            lines.append(f"modelyard_digest_pulls_total{_labels(repository=repository)} {count}")
        lines += [
            "# HELP modelyard_http_responses_total HTTP responses by method and status.",
            "# TYPE modelyard_http_responses_total counter",
        ]
        for (method, status), count in sorted(self.responses.items()):
            lines.append(f"modelyard_http_responses_total{_labels(method=method, status=str(status))} {count}")
        lines += [
            "# HELP modelyard_http_response_body_bytes_total Bytes of response bodies sent.",
            "# TYPE modelyard_http_response_body_bytes_total counter",
            f"modelyard_http_response_body_bytes_total {self.bytes_sent}",
        ]
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    escaped = (f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
