"""`python -m tests.trainer.stage_sequence STAGE CONFIG [STAGE CONFIG ...]`: several trainer stages one after the
other in one process, as `python -m trainer STAGE --config CONFIG` runs each. Under torchrun this pays the
launch and the imports once for all the stages a distributed test compares (each stage leaves its process group
and the next one sets it up again)."""

from __future__ import annotations

import sys

from trainer.cli import main


def run(argv: list[str]) -> None:
    pairs = list(zip(argv[::2], argv[1::2]))
    if not pairs or len(argv) % 2:
        raise SystemExit("usage: python -m tests.trainer.stage_sequence STAGE CONFIG [STAGE CONFIG ...]")
    for stage, config in pairs:
        try:
            main([stage, "--config", config])
        except SystemExit as done:  # the CLI exits after its stage; go on to the next one unless it failed
            if done.code not in (0, None):
                raise


if __name__ == "__main__":
    run(sys.argv[1:])
