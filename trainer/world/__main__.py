"""`python -m trainer.world build|measure`: build the embedded world and measure its SFT model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from trainer.world.build import SIZES, WorldBuildError, build_all, build_world, measure_format


def _printer(stage: str, step: int, total: int) -> None:
    print(f"\r{stage}: {step}/{total}", end="\n" if step >= total else "", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.world", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the world's data and train its tokenizer, pretrained and SFT models")
    build.add_argument("--size", choices=sorted(SIZES), default="small")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--data-only", action="store_true", help="write the data files only")
    measure = sub.add_parser("measure", help="share of eval prompts the SFT model answers in the intended format")
    measure.add_argument("--out", required=True, type=Path, help="a built world directory")
    measure.add_argument("--model", type=Path, help="model directory (default: the world's sft/)")
    measure.add_argument("--temperature", type=float, default=0.7)
    measure.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        if args.command == "build":
            if args.data_only:
                files = build_world(args.size, args.out, seed=args.seed, on_progress=_printer)
                result = {"files": {k: str(v) for k, v in asdict(files).items()}}
            else:
                files, models = build_all(args.size, args.out, seed=args.seed, on_progress=_printer)
                result = {
                    "files": {k: str(v) for k, v in asdict(files).items()},
                    "models": {k: str(v) for k, v in asdict(models).items()},
                }
        else:
            manifest = json.loads((args.out / "world.json").read_text())
            report = measure_format(
                args.model or args.out / "sft",
                args.out / "prompts_eval.jsonl",
                args.out / "eval_samples.jsonl",
                temperature=args.temperature,
                max_new_tokens=manifest["size"]["max_new_tokens"],
                seed=args.seed,
                on_progress=_printer,
            )
            result = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(report).items()}
    except (WorldBuildError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
