"""Does a round with default settings learn what the annotators prefer? One hidden rule at a time.

    .venv/bin/python bench/preference_suite.py                     # every rule, 150 and 600 labels, seeds 0-4
    .venv/bin/python bench/preference_suite.py --rules shorter --labels 150 --seeds 0     # one cell
    .venv/bin/python bench/preference_suite.py --write-results     # the stored cells' table -> docs/results.md

Each cell (rule, labels, seed) runs on a fresh data dir, everything through the server and the worker as a team
would: the world's prompts are imported and its SFT model registered over the HTTP API, --labels tasks (rankings of
--k) are generated from it, simulated annotators (app.simulation) label them over HTTP by ONE hidden rule of
trainer.world.rules (not the world's gold judge: the response with less of the rule's feature wins), and
`POST /api/v1/rounds` starts one round with no setting changed (the body names only its seed). Then the old policy
(the SFT model) and the round's new policy are sampled on the same held-out prompts (the eval split, which no round
trains on) with the same sampling settings and seed, and the rule's own feature is measured on both.

The goal, stated before the runs: for every rule, at 150 and at 600 labels, in at least 4 of 5 seeds, the feature's
mean on the new policy is at most GOAL_RATIO (0.8) times the old policy's (the disliked feature at least 20% rarer,
or 20% fewer words), and the round's KL to the SFT model (its evaluation's, summed over a response) is at most
KL_BOUND nats.

`--set KEY=VALUE` changes a round setting (`algo=ppo`, `ppo.lr=1e-5`, `reward_likelihood=true`): each is printed as
an OVERRIDE and kept in the cell's key, so pilot runs never mix with default ones. Cells accumulate in
--results-file across invocations (the same key replaces the older cell); `--write-results` writes their table into
docs/results.md between the suite's markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rlhf_efficacy import JobDidNotSucceed, Services, prepare_world, product_default, wait_job  # noqa: E402

from app.simulation import run_simulation  # noqa: E402
from trainer.world import SIZES  # noqa: E402
from trainer.world import annotators as choice_model  # noqa: E402
from trainer.world.rules import RULES, HiddenRule  # noqa: E402

GOAL_RATIO = 0.8
KL_BOUND = 5.0
GOAL_SEEDS = 4  # of 5
JUDGING_SEEDS = (0, 1, 2, 3, 4)  # pilot cells (seeds 100 and up) pick values and never count towards the goal
# The screen, before any round: a rule runs in the suite only if its feature differs among a prompt's SCREEN_SAMPLES
# SFT samples (a ranking's k) for at least SCREEN_SHARE of SCREEN_PROMPTS train prompts. It looks at the SFT model's
# samples alone, never at what a round learns.
SCREEN_SHARE = 0.5
SCREEN_SAMPLES = 4
SCREEN_PROMPTS = 200
SCREEN_SEED = 7
RESULTS_START = "<!-- preference-suite:start -->"
RESULTS_END = "<!-- preference-suite:end -->"


class CellFailed(RuntimeError):
    pass


def sample_policy(model: Path, prompts: Path, out: Path, *, seed: int, samples: int, max_new_tokens: int) -> list:
    """`trainer generate` with the suite's fixed sampling settings: the same for the old and the new policy."""
    from trainer.config import UsageError
    from trainer.generate import GenerateConfig, run_generate

    config = GenerateConfig(
        model=str(model),
        prompts=str(prompts),
        out=str(out),
        num_samples=samples,
        temperature=0.7,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    try:
        run_generate(config)
    except UsageError as exc:
        raise CellFailed(f"generate {model}: {exc}") from None
    return [json.loads(line) for line in out.read_text().splitlines()]


def feature_mean(rule: HiddenRule, samples: list[dict]) -> float:
    return statistics.fmean(rule.feature(s["text"]) for s in samples)


def varying_share(rule: HiddenRule, samples: list[dict]) -> float:
    """Share of prompts whose samples differ in the rule's feature. Annotators can only express the rule where a
    prompt's responses differ in it, and a policy can only move towards the responses it samples: a feature that
    a prompt's samples all share (decided by the prompt, not by the answer) gives neither labels nor room to learn.
    Measured on the SFT model's samples, before any round."""
    by_prompt: dict[Any, set[float]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_id"], set()).add(rule.feature(s["text"]))
    return statistics.fmean(len(v) > 1 for v in by_prompt.values())


def screen_rules(world: Path, out_dir: Path, *, max_new_tokens: int, prompts: int = SCREEN_PROMPTS) -> dict[str, Any]:
    """Sample the world's SFT model SCREEN_SAMPLES times on its first `prompts` train prompts and choose the rules
    whose feature varies within at least SCREEN_SHARE of them."""
    lines = (world / "prompts.jsonl").read_text().splitlines()
    train = [line for line in lines if json.loads(line)["split"] == "train"][:prompts]
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts_file = out_dir / "screen_prompts.jsonl"
    prompts_file.write_text("".join(f"{line}\n" for line in train))
    samples = sample_policy(
        world / "sft",
        prompts_file,
        out_dir / "screen_samples.jsonl",
        seed=SCREEN_SEED,
        samples=SCREEN_SAMPLES,
        max_new_tokens=max_new_tokens,
    )
    return {"prompts": len(train), "samples": SCREEN_SAMPLES, "seed": SCREEN_SEED, **choose_rules(samples)}


def choose_rules(samples: list[dict]) -> dict[str, Any]:
    """The candidate rules whose feature differs within at least SCREEN_SHARE of the prompts' samples: the others
    cannot be expressed by annotators nor learnt from these samples."""
    shares = {name: varying_share(rule, samples) for name, rule in RULES.items()}
    means = {name: feature_mean(rule, samples) for name, rule in RULES.items()}
    chosen = [name for name in RULES if shares[name] >= SCREEN_SHARE]
    return {"shares": shares, "means": means, "chosen": chosen}


def screen_table(screen: dict[str, Any], size: str) -> str:
    """Markdown: every candidate rule, its feature's mean and varying share on the SFT samples, and the choice."""
    lines = [
        f"Screen ({size} world, before any round): {screen['prompts']} train prompts x {screen['samples']} SFT "
        f"samples, seed {screen['seed']}; a rule runs if its feature differs within at least {SCREEN_SHARE:.0%} of "
        "the prompts.",
        "",
        "| kind | rule | feature | mean over the SFT samples | prompts whose samples differ | runs in the suite |",
        "|---|---|---|---|---|---|",
    ]
    for rule in sorted(RULES.values(), key=lambda r: (r.kind, r.name)):
        runs = "yes" if rule.name in screen["chosen"] else "no"
        lines.append(
            f"| {rule.kind} | {rule.name} | {rule.feature_name} | {screen['means'][rule.name]:.2f} | "
            f"{screen['shares'][rule.name]:.2f} | {runs} |"
        )
    return "\n".join(lines) + "\n"


def run_cell(
    world: Path,
    rule: HiddenRule,
    *,
    labels: int,
    seed: int,
    overrides: dict[str, Any],
    max_new_tokens: int,
    eval_prompts: int = 200,
    eval_samples: int = 2,
    annotators: int = 5,
    noise: float = 0.1,
    k: int = 4,
    task_kind: str = "ranking",
    train_prompts: int | None = None,
    data_root: Path | None = None,
    log=print,
) -> dict[str, Any]:
    """Label by `rule`, run one round, measure the rule's feature on the old and new policy. `train_prompts`: import
        only that many of the world's train prompts (a quick test; the suite imports them all). The data dir is made in
    `data_root` (default: the system's temp dir) and kept, to look into."""
    started = time.perf_counter()
    services = Services(Path(tempfile.mkdtemp(prefix="rlhf-prefs-", dir=data_root)))
    try:
        token = services.start()
        api = httpx.Client(base_url=services.url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        prompts = [json.loads(line) for line in (world / "prompts.jsonl").read_text().splitlines()]
        if train_prompts is not None:
            train = [p for p in prompts if p["split"] == "train"][:train_prompts]
            prompts = train + [p for p in prompts if p["split"] != "train"]
        api.post("/api/v1/prompts", json=prompts).raise_for_status()
        api.post(
            "/api/v1/models", json={"path": str(world / "sft"), "name": "sft", "kind": "policy", "stage": "sft"}
        ).raise_for_status()
        generate = api.post(
            "/api/v1/generate",
            json={
                "count": labels,
                "num_samples": k,
                "max_new_tokens": max_new_tokens,
                "seed": seed,
                "temperature": 0.7,
                "task_kind": task_kind,
            },
        )
        generate.raise_for_status()
        wait_job(api, generate.json()["job_id"], "tasks", log)
        report = run_simulation(
            url=services.url,
            admin_token=token,
            annotators=annotators,
            labels=labels,
            noise=noise,
            seed=seed,
            scorer=rule.score,
        )
        config: dict[str, Any] = {"seed": seed}
        for key, value in overrides.items():  # "ppo.lr" -> {"ppo": {"lr": ...}}
            *groups, name = key.split(".")
            node = config
            for group in groups:
                node = node.setdefault(group, {})
            node[name] = value
        answer = api.post("/api/v1/rounds", json=config)
        if answer.status_code != 201:
            raise CellFailed(f"round refused: {answer.text}")
        job = wait_job(api, answer.json()["id"], "round", log)
        policy = services.data_dir / "rounds" / str(job["id"]) / "policy"
        held = world / "prompts_eval.jsonl"
        eval_file = services.data_dir / "suite_eval_prompts.jsonl"
        eval_file.write_text("".join(held.read_text().splitlines(keepends=True)[:eval_prompts]))
        common = dict(seed=1000 + seed, samples=eval_samples, max_new_tokens=max_new_tokens)
        old = sample_policy(world / "sft", eval_file, services.data_dir / "old.jsonl", **common)
        new = sample_policy(policy, eval_file, services.data_dir / "new.jsonl", **common)
    finally:
        services.stop()
    result = job["result"]
    before, after = feature_mean(rule, old), feature_mean(rule, new)
    ratio = after / before if before else None
    kl = result["evaluation"].get("kl_to_ref")
    return {
        "rule": rule.name,
        "labels": report.labels,
        "seed": seed,
        "overrides": overrides,
        "algo": result["algo"],
        "feature": rule.feature_name,
        "old": before,
        "new": after,
        "ratio": ratio,
        "kl_to_sft": kl,  # k1 over the round's eval samples: unbiased, and slightly negative at times
        "kl_to_sft_k3": result["evaluation"].get("kl_to_start"),  # k3 (never negative); the round starts at SFT
        "moved": ratio is not None and ratio <= GOAL_RATIO,
        "kl_ok": kl is not None and kl <= KL_BOUND,
        "old_prompts_varying": varying_share(rule, old),
        "truncated_old": statistics.fmean(s["finish_reason"] != "eos" for s in old),
        "truncated_new": statistics.fmean(s["finish_reason"] != "eos" for s in new),
        "length_old": statistics.fmean(s["num_tokens"] for s in old),
        "length_new": statistics.fmean(s["num_tokens"] for s in new),
        "pairs": result.get("data_size", {}).get("pairs"),
        "labels_follow_rule": choice_model.pair_agreement(report.pairwise_labels),
        "prompts_measured": len({s["prompt_id"] for s in old}),
        "samples_measured": len(old),
        "rm_eval_accuracy": result["reward"].get("eval_accuracy"),
        "rm_best_step": result["reward"].get("best_step"),
        "sized_flags": result.get("sized_flags"),
        "warnings": result.get("warnings", []),
        "data_dir": str(services.data_dir),
        "seconds": round(time.perf_counter() - started, 1),
    }


def cell_key(cell: dict[str, Any]) -> str:
    overrides = ",".join(f"{k}={v}" for k, v in sorted(cell["overrides"].items()))
    return f"{cell['size']}|{cell['rule']}|{cell['labels_asked']}|{cell['seed']}|{overrides}"


def load_json(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.is_file() else {}


def results_table(cells: list[dict[str, Any]]) -> str:
    """Markdown: one row per cell, then one per (overrides, rule, labels) with how many judging seeds met the goal."""

    def fmt(v, spec=".2f"):
        return "–" if v is None else format(v, spec)

    lines = [
        "| world | rule (feature) | labels | seed | settings | old | new | new / old | KL to SFT | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        cells, key=lambda c: (c.get("size", ""), json.dumps(c["overrides"]), c["rule"], c["labels_asked"], c["seed"])
    )
    for c in ordered:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(c["overrides"].items())) or "defaults"
        met = "met" if c["moved"] and c["kl_ok"] else "NOT met"
        lines.append(
            f"| {c.get('size', '–')} | {c['rule']} ({c['feature']}) | {c['labels_asked']} | {c['seed']} | {settings} | "
            f"{fmt(c['old'])} | "
            f"{fmt(c['new'])} | {fmt(c['ratio'])} | {fmt(c['kl_to_sft'])} | {met} |"
        )
    groups: dict[tuple, list[dict]] = {}
    for c in (c for c in ordered if c["seed"] in JUDGING_SEEDS):
        key = (c.get("size", "–"), json.dumps(c["overrides"], sort_keys=True), c["rule"], c["labels_asked"])
        groups.setdefault(key, []).append(c)
    lines += [
        "",
        "| world | rule | labels | settings | judging seeds run | seeds meeting the goal | goal (>= 4 of 5 seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (size, overrides, rule, labels), group in groups.items():
        met = sum(c["moved"] and c["kl_ok"] for c in group)
        missed = len(group) - met
        verdict = "met" if met >= GOAL_SEEDS else "NOT met" if missed > 5 - GOAL_SEEDS else "open"
        settings = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(overrides).items())) or "defaults"
        lines.append(f"| {size} | {rule} | {labels} | {settings} | {len(group)} | {met} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_results(table: str, path: Path) -> None:
    text = path.read_text()
    block = f"{RESULTS_START}\n{table}{RESULTS_END}"
    if RESULTS_START in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_START, 1)
        text = head + block + rest.split(RESULTS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--world-dir", type=Path, help="where the world is built and cached (default bench/out/world-SIZE)"
    )
    parser.add_argument("--reuse-world", action="store_true", help="use --world-dir as it is, without checking it")
    parser.add_argument("--rules", nargs="+", choices=sorted(RULES), help="default: the screen's choice")
    parser.add_argument("--screen", action="store_true", help="run the screen again (it runs once per world size)")
    parser.add_argument("--labels", nargs="+", type=int, help="default: 150 600")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default: {' '.join(map(str, JUDGING_SEEDS))}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--results-file", type=Path, default=ROOT / "bench" / "out" / "preference_suite.json")
    parser.add_argument("--write-results", action="store_true", help="write the stored cells' table to docs/results.md")
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    for key, value in overrides.items():
        path = tuple(key.split("."))
        try:
            default = product_default(path)
        except (KeyError, ValueError):
            default = "the round's own"
        print(f"OVERRIDE --set {key}={value} (default {default})", flush=True)
    size = SIZES[args.size]
    cells = load_json(args.results_file)
    screen_file = args.results_file.with_name(f"{args.results_file.stem}_screen.json")
    screens = load_json(screen_file)
    # --write-results alone writes the stored cells' table; anything else runs cells first
    # (--screen alone screens only)
    asked = any(x is not None for x in (args.rules, args.labels, args.seeds))
    run = asked or not (args.write_results or args.screen)
    world = None
    if args.screen or (run and args.rules is None and args.size not in screens):
        world = prepare_world(args.size, args.world_dir, args.reuse_world)
        screens[args.size] = screen_rules(
            world, args.results_file.parent / f"screen-{args.size}", max_new_tokens=size.max_new_tokens
        )
        screen_file.parent.mkdir(parents=True, exist_ok=True)
        screen_file.write_text(json.dumps(screens, indent=2))
        print(screen_table(screens[args.size], args.size))
    screened = screens.get(args.size, {}).get("chosen", [])
    rules, sizes, seeds = args.rules or sorted(screened), args.labels or [150, 600], args.seeds or list(JUDGING_SEEDS)
    todo = [(r, n, s) for n in sizes for r in rules for s in seeds] if run else []
    if todo and world is None:
        world = prepare_world(args.size, args.world_dir, args.reuse_world)
    for rule_name, labels, seed in todo:
        print(f"{rule_name}, {labels} labels, seed {seed} ...", file=sys.stderr, flush=True)
        try:
            cell = run_cell(
                world,
                RULES[rule_name],
                labels=labels,
                seed=seed,
                overrides=overrides,
                max_new_tokens=size.max_new_tokens,
                eval_prompts=args.eval_prompts,
                eval_samples=args.eval_samples,
                log=lambda m: print(m, file=sys.stderr, flush=True),
            )
        except (CellFailed, JobDidNotSucceed) as exc:
            print(f"  FAILED: {exc}", flush=True)
            continue
        cell["labels_asked"], cell["size"] = labels, args.size
        cells[cell_key(cell)] = cell
        args.results_file.parent.mkdir(parents=True, exist_ok=True)
        args.results_file.write_text(json.dumps(cells, indent=2))
        ratio = "–" if cell["ratio"] is None else f"x{cell['ratio']:.2f}"
        goal = "met" if cell["moved"] and cell["kl_ok"] else "NOT met"
        print(
            f"{rule_name} ({cell['feature']}), {labels} labels, seed {seed}: old {cell['old']:.3f} -> new "
            f"{cell['new']:.3f} ({ratio} the old policy's, same run), KL {cell['kl_to_sft']}, goal {goal}; "
            f"{cell['seconds']:.0f} s",
            flush=True,
        )
    table = "".join(f"{screen_table(screens[k], k)}\n" for k in sorted(screens)) + results_table(list(cells.values()))
    print(table)
    if args.write_results:
        write_results(table, ROOT / "docs" / "results.md")
        print("docs/results.md: table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
