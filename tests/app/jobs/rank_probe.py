"""A stand-in trainer for the worker's multi-process launch: each process writes which rank of how many it is."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{os.environ.get('RANK', '-')}-of-{os.environ.get('WORLD_SIZE', '-')}").touch()
