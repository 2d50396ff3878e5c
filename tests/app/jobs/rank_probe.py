"""A stand-in trainer for the worker's multi-process launch: each process writes which rank of how many it is into
the output directory (`--out DIR`, or the "out" of `--config FILE`), rank 0 an empty metrics.jsonl."""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--config" in args:
        out = Path(json.loads(Path(args[args.index("--config") + 1]).read_text())["out"])
    else:
        out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{os.environ.get('RANK', '-')}-of-{os.environ.get('WORLD_SIZE', '-')}").touch()
    if os.environ.get("RANK", "0") == "0":
        (out / "metrics.jsonl").touch()
