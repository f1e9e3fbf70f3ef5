"""Benchmarks, each printing ratios against an anchor measured in the same run.

python -m bench layer        the eStargz layer writer vs the reference writer
python -m bench compressors  format 2's compressor and the candidates, on weights and text, across CPUs
python -m bench site         the catalog site: render time, index weight, Lighthouse
python -m bench virtual      virtual blob GETs vs stored blob GETs; storage of every format
python -m bench stream       streaming from the Hub into a bucket vs snapshot_download alone
"""

from __future__ import annotations

import sys

from bench import compressors, hub, layer, load, registry, s3, site, stream, virtual

BENCHMARKS = {
    "layer": layer.main,
    "compressors": compressors.main,
    "hub": hub.main,
    "s3": s3.main,
    "registry": registry.main,
    "site": site.main,
    "virtual": virtual.main,
    "load": load.main,
    "stream": stream.main,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m bench {{{'|'.join(BENCHMARKS)}}} [options]\n\n{__doc__}")
    BENCHMARKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
