"""The paired ablation on the embedded demo: `featcache study` over manifests/study-demo.yaml.

    python pipelines/ablation.py [--quick] [--seeds 0,1,2,3,4] [--arms 1,2,...] [--out DIR] ...

is exactly `featcache study --manifest manifests/study-demo.yaml [options]` (every option of
`featcache study --help` passes through). The arms (student alone random / ImageNet-pretrained,
+ distillation, + adaptive gates, + return decoder, + feature pretraining, the reconstruction kept
off the student), label fractions, seeds and the orientation test set are data in that manifest's
`study:` section. Writes runs/study-demo/{results.csv, table.md, study.png}; resumable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from featcache.cli import app

MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "study-demo.yaml"


def main(argv: list[str] | None = None) -> int:
    """Run the study; the exit status of `featcache study` (0, 1 for a user error, 2 for usage)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(["study", "--manifest", str(MANIFEST), *args], standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
