"""A container health check: exit 0 when the front-end on this machine answers ``/healthz`` with 200.

Images have no curl; Python is there. The port is the server's own (``MODELYARD_PORT``, default 5000),
so a container configured by its environment checks the right one::

    HEALTHCHECK CMD ["python", "-m", "worker.healthcheck"]
    python -m worker.healthcheck http://127.0.0.1:8080/healthz     # or any URL
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def check(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"{url}: HTTP {err.code} {err.read(200).decode('utf-8', 'replace').strip()}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url}: {getattr(err, 'reason', err)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else f"http://127.0.0.1:{os.environ.get('MODELYARD_PORT', '5000')}/healthz"
    problem = check(url)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
