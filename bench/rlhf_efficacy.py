"""Does the loop work? RLHF rounds on the embedded world, everything through the server and the worker.

    .venv/bin/python bench/rlhf_efficacy.py                        # small world, 3 rounds of 300 labels
    .venv/bin/python bench/rlhf_efficacy.py --size tiny --labels 60 --rounds 2     # a quick look
    .venv/bin/python bench/rlhf_efficacy.py --reliability-arms     # 6 annotators: all honest, 2 careless, 2 weighted

Steps: build the world (cached in --world-dir: data, tokenizer, pretrained and SFT models); start `rlhf serve` and
`rlhf worker` on a fresh data dir; import the world's prompts, register its SFT model and ask for pairwise tasks
(`POST /api/v1/generate`), all through the HTTP API. Then per round: simulated annotators (app.simulation,
Bradley-Terry on the gold judge with label noise) submit --labels labels over HTTP; `POST /api/v1/rounds` starts a
round with the product's defaults (reward model -> the default algorithm's policy stage -> evaluation against the SFT
model on the eval prompts under the reward model and the gold judge -> the new policy becomes current -> its samples
become the next tasks); the worker runs it. Learning flags (--algo, --rm-*, --ppo-*, --rs-*, --dpo-*) are unset by
default; each one given is printed as "OVERRIDE --x=y (default z)", so every figure without one is what a user gets.

Per round it prints the new policy's gold win-rate against the SFT model on eval prompts (--eval-samples samples of
each, 4 by default; ties count half; ± its standard error over prompts), KL to the SFT model (summed over a
response, k1), mean response length (tokens), and the reward model's held-out accuracy against the label-noise
ceiling: the share of the reward model's held-out pairs (the round's reward_eval.jsonl) that the gold judge itself
orders as the labels do, a gold tie counting half: what a perfect reward model would score on the same noisy labels.
Goal: gold win-rate >= 70% after 3 rounds with KL reported; reward model >= 90% of the ceiling. Then, to say what
changed: the mean of each part of the gold score (correct, helpful, concise, polite) of the new policy's and the SFT
model's samples on the eval prompts, and how often the reward model orders the held-out pairs whose responses differ
in correctness as the gold judge does (with the labels' own accuracy on them). Results also go to
bench/out/rlhf_efficacy.json.

Unreliable annotators: --careless N (--careless-rate) and --adversarial N turn N of the simulated annotators careless
(random choices) or adversarial (inverted), --overlap gives each task that many annotators, --annotator-weighting
sets the rounds' `annotator_weighting`. --reliability-arms runs three arms on the same seeds, 6 annotators and
overlap 3: all honest; 2 careless, unweighted; 2 careless, weighted by Dawid-Skene (dawid_skene). It reports each
arm's last-round gold win-rate and RM / ceiling (the ceiling is over each arm's own held-out labels, careless ones
included) and the issue's goal: the weighted arm within 1 point of the honest one, and at least 3 points above the
unweighted one, on both. Results go to bench/out/rlhf_efficacy_reliability.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reward_correctness import accuracy_on_correctness_pairs, heldout_ceiling, labelled_pairs  # noqa: E402  (bench/)

from app.services.rounds.config import LENGTH_FLAGS, RoundConfig, stage_defaults  # noqa: E402
from app.simulation import run_simulation  # noqa: E402
from trainer.world import SIZES, build_all  # noqa: E402
from trainer.world import annotators as choice_model  # noqa: E402
from trainer.world.judge import assess as gold_assess  # noqa: E402

GOLD_PARTS = ("correct", "helpful", "concise", "polite")


# The bench's learning flags: (flag's dest, round config path). Left out, each is the product's default; given, it is
# an override, printed as such. The rest of the round config is how the bench measures (baseline, judge, eval) and
# how its annotators get tasks (next_tasks), not how the round learns.
OVERRIDABLE = {
    "algo": ("algo",),
    "rm_epochs": ("reward", "epochs"),
    "rm_lr": ("reward", "lr"),
    "rm_batch_size": ("reward", "batch_size"),
    "rm_likelihood": ("reward_likelihood",),
    "ppo_steps": ("ppo", "max_steps"),
    "ppo_lr": ("ppo", "lr"),
    "kl_coef": ("ppo", "kl_coef"),
    "rs_samples": ("rs", "num_samples"),
    "rs_lr": ("sft", "lr"),
    "rs_epochs": ("sft", "epochs"),
    "dpo_lr": ("dpo", "lr"),
    "dpo_beta": ("dpo", "beta"),
    "dpo_epochs": ("dpo", "epochs"),
    "annotator_weighting": ("annotator_weighting",),
}


def product_default(path: tuple[str, ...]) -> Any:
    """What a round runs with when the bench does not say (the round's own defaults; sized ones say so)."""
    if len(path) == 1:
        return RoundConfig.model_fields[path[0]].default
    stage, flag = path
    if path == ("reward", "epochs"):
        return "early stopping on the held-out pairs"
    if flag in LENGTH_FLAGS and stage in ("ppo", "sft", "dpo"):
        return "sized from the data"
    return stage_defaults(stage).get(flag)


def overrides(args) -> dict:
    """The round settings the bench's flags change, each printed as OVERRIDE."""
    config: dict = {}
    for dest, path in OVERRIDABLE.items():
        value = getattr(args, dest)
        if value is None:
            continue
        print(f"OVERRIDE --{dest.replace('_', '-')}={value} (default {product_default(path)})", flush=True)
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        if path == ("reward", "epochs"):  # a fixed epoch count replaces early stopping
            node["early_stopping_patience"] = 0
    return config


def round_config(args, size) -> dict:
    """The round each iteration starts: the product's defaults, plus the bench's measuring settings and overrides."""
    return {
        "seed": args.seed,
        "baseline": "sft",
        "gold_judge": "trainer.world.judge:score",
        "eval_prompts": args.eval_prompts,
        "eval_samples": args.eval_samples,
        "eval_max_new_tokens": size.max_new_tokens,
        "eval_temperature": 0.7,
        # every eval prompt's before/after sample goes on the report, so the bench can say what changed
        "report_samples": min(args.eval_prompts, 200),
        "next_tasks": {
            "prompts": args.labels,
            "k": args.k,
            "kind": args.task_kind,
            "max_new_tokens": size.max_new_tokens,
            "temperature": args.temperature,
            "overlap": args.overlap,
        },
        **overrides(args),
    }


def prepare_world(size_name: str, world_dir: Path | None, reuse: bool) -> Path:
    """The world's data and models in world_dir (default bench/out/world-SIZE), built once and cached there."""
    world = world_dir or ROOT / "bench" / "out" / f"world-{size_name}"
    started = time.perf_counter()
    if not (reuse and (world / "sft" / "config.json").is_file()):
        print(f"building the {size_name} world in {world} (cached)...", file=sys.stderr, flush=True)
        build_all(size_name, world)
    print(f"  world ready in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return world


class Services:
    """`rlhf serve` and `rlhf worker` on a fresh data dir, stopped on exit."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "RLHF_DATA_DIR": str(data_dir),
            "RLHF_DATABASE_URL": f"sqlite:///{data_dir / 'rlhf.sqlite3'}",
            "RLHF_SECRET_KEY": "bench",
            "RLHF_OFFLINE_ASSETS": "1",
            "RLHF_WORKER_POLL_S": "0.5",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.procs: list[subprocess.Popen] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def rlhf(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            input=input,
            text=True,
            capture_output=True,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise SystemExit(f"rlhf {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def start(self) -> str:
        self.rlhf("db", "upgrade")
        self.rlhf(
            "users",
            "create",
            "--username",
            "bench-admin",
            "--role",
            "admin",
            "--password-stdin",
            input="bench-admin-password\n",
        )
        token = self.rlhf("tokens", "create", "--username", "bench-admin")
        for name, args in (
            ("serve", ["serve", "--host", "127.0.0.1", "--port", str(self.port)]),
            ("worker", ["worker"]),
        ):
            log = open(self.data_dir / f"{name}.log", "ab")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", *args],
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return token
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("rlhf serve did not start")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def gold_parts(samples: Path, prompts: Path) -> dict[str, float] | None:
    """Mean of each part of the gold score (judge.assess) over a round's report samples: what the policy got better
    at (style: helpful, concise, polite) and what it did not (correct)."""
    if not samples.is_file() or not prompts.is_file():
        return None
    prompt_by_id = {row["prompt_id"]: row["prompt"] for row in map(json.loads, prompts.read_text().splitlines())}
    parts = [
        gold_assess(prompt_by_id[row["prompt_id"]], row["text"])
        for row in map(json.loads, samples.read_text().splitlines())
    ]
    return {name: sum(getattr(a, name) for a in parts) / len(parts) for name in GOLD_PARTS} if parts else None


class JobDidNotSucceed(RuntimeError):
    pass


def wait_job(api: httpx.Client, job_id: int, what: str, log=None) -> dict:
    """Polls a job until it ends, logging each new progress message (stderr by default); JobDidNotSucceed when it
    fails or is cancelled."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    last = ""
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        message = job["progress"]["message"]
        if message != last:
            log(f"  {what}: {job['status']} {message}")
            last = message
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise JobDidNotSucceed(f"{what} {job['status']}: {job['error']}")
            return job
        time.sleep(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--world-dir", type=Path, help="where the world is built and cached (default bench/out/world-SIZE)"
    )
    parser.add_argument(
        "--reuse-world",
        action="store_true",
        help="use --world-dir as it is (its sft/ and prompts), without checking it is current",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=300, help="simulated labels per round")
    parser.add_argument("--annotators", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.1, help="annotators' choice temperature (gold units)")
    parser.add_argument("--seed", type=int, default=0)
    # learning settings: unset = the product's default (a given one is printed as an OVERRIDE)
    parser.add_argument("--rm-epochs", type=int, help="reward model: fixed epochs instead of early stopping")
    parser.add_argument("--rm-lr", type=float)
    parser.add_argument("--rm-batch-size", type=int)
    parser.add_argument(
        "--no-rm-likelihood",
        dest="rm_likelihood",
        action="store_false",
        default=None,
        help="the reward model without the SFT model's log-likelihood feature (round setting reward_likelihood)",
    )
    parser.add_argument("--rm-likelihood", dest="rm_likelihood", action="store_true", help="the reward model with it")
    parser.add_argument("--ppo-steps", type=int, help="PPO steps")
    parser.add_argument("--ppo-lr", type=float)
    parser.add_argument("--kl-coef", type=float)
    parser.add_argument("--algo", choices=["ppo", "dpo", "rs"], help="how each round tunes the policy")
    parser.add_argument("--rs-samples", type=int, help="rs: samples per train prompt (best of N)")
    parser.add_argument("--rs-lr", type=float, help="rs: SFT learning rate on the best samples")
    parser.add_argument("--rs-epochs", type=int, help="rs: SFT epochs on the best samples")
    parser.add_argument("--dpo-lr", type=float)
    parser.add_argument("--dpo-beta", type=float)
    parser.add_argument("--dpo-epochs", type=int)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=4,
        help="samples per eval prompt and policy (1 sample of 200 prompts: a win-rate +-3.5 points)",
    )
    parser.add_argument(
        "--task-kind",
        choices=["pairwise", "ranking"],
        default="ranking",
        help="what people label: pairwise choices, or rankings of K (K(K-1)/2 pairs each)",
    )
    parser.add_argument("--k", type=int, default=4, help="responses per task")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="sampling temperature of the responses people label (first tasks and each round's)",
    )
    parser.add_argument("--max-new-tokens", type=int, help="response length limit (default: the world size's)")
    parser.add_argument("--careless", type=int, default=0, help="annotators who choose at random")
    parser.add_argument(
        "--careless-rate", type=float, default=1.0, help="share of a careless annotator's tasks labelled at random"
    )
    parser.add_argument("--adversarial", type=int, default=0, help="annotators who invert their choices")
    parser.add_argument("--overlap", type=int, default=1, help="distinct annotators each task needs")
    parser.add_argument(
        "--annotator-weighting",
        choices=["none", "gold", "dawid_skene"],
        help="the rounds' annotator_weighting (default: the product's, none)",
    )
    parser.add_argument(
        "--reliability-arms",
        action="store_true",
        help="run all honest / 2 of 6 careless / 2 of 6 careless weighted by dawid_skene and compare (module doc)",
    )
    return parser.parse_args(argv)


def run_arm(args: argparse.Namespace, world: Path, size) -> list[dict]:
    """One run of the bench: a fresh server and worker, the first tasks, then --rounds rounds; its rows per round."""
    config = round_config(args, size)  # prints the overrides first
    services = Services(Path(tempfile.mkdtemp(prefix="rlhf-efficacy-")))
    rows: list[dict] = []
    labels_so_far: list[choice_model.Label] = []
    try:
        token = services.start()
        api = httpx.Client(base_url=services.url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        prompts = [json.loads(line) for line in (world / "prompts.jsonl").read_text().splitlines()]
        api.post("/api/v1/prompts", json=prompts).raise_for_status()
        api.post(
            "/api/v1/models",
            json={"path": str(world / "sft"), "name": f"world-{args.size}-sft", "kind": "policy", "stage": "sft"},
        ).raise_for_status()
        generate = api.post(
            "/api/v1/generate",
            json={
                "count": args.labels,
                "num_samples": args.k,
                "max_new_tokens": size.max_new_tokens,
                "seed": args.seed,
                "temperature": args.temperature,
                "task_kind": args.task_kind,
                "overlap": args.overlap,
            },
        )
        generate.raise_for_status()
        wait_job(api, generate.json()["job_id"], "first tasks")
        for number in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            report = run_simulation(
                url=services.url,
                admin_token=token,
                annotators=args.annotators,
                labels=args.labels,
                noise=args.noise,
                seed=args.seed + number,
                careless=args.careless,
                careless_rate=args.careless_rate,
                adversarial=args.adversarial,
            )
            labels_so_far += report.pairwise_labels
            print(f"round {number}: {report.labels} labels in {report.seconds:.0f} s", file=sys.stderr, flush=True)
            started_round = api.post("/api/v1/rounds", json={**config, "seed": args.seed + number})
            if started_round.status_code != 201:
                raise SystemExit(f"round {number} refused: {started_round.text}")
            job = wait_job(api, started_round.json()["id"], f"round {number}")
            result = job["result"]
            rdir = services.data_dir / "rounds" / str(job["id"])
            held_out = labelled_pairs(rdir / "reward_eval.jsonl")
            ceiling = heldout_ceiling(held_out)
            accuracy = result["reward"].get("eval_accuracy")
            ev = result["evaluation"]
            parts_after = gold_parts(rdir / "samples_after.jsonl", rdir / "report_prompts.jsonl")
            parts_sft = gold_parts(rdir / "samples_before.jsonl", rdir / "report_prompts.jsonl")
            on_correctness = accuracy_on_correctness_pairs(rdir / "reward", held_out)
            rows.append(
                {
                    "round": number,
                    "labels": len(labels_so_far),
                    "job_id": job["id"],
                    "gold_win_rate_vs_sft": ev.get("gold_win_rate"),
                    "gold_win_rate_se": ev.get("gold_win_rate_se"),
                    "rm_win_rate_vs_sft": ev.get("rm_win_rate"),
                    "kl_to_sft": ev.get("kl_to_ref"),
                    "mean_length": ev.get("mean_length"),
                    "mean_length_sft": ev.get("mean_length_before"),
                    "gold_score": ev.get("gold_score"),
                    "gold_score_sft": ev.get("gold_score_before"),
                    "rm_accuracy": accuracy,
                    "label_ceiling": ceiling,
                    "labels_top2_gold_agreement": choice_model.pair_agreement(labels_so_far),
                    "labels_gold_agreement_by_behaviour": report.as_dict()["agreement_with_gold_by_behaviour"],
                    "annotator_weights": result.get("annotator_weights"),
                    "rm_vs_ceiling": accuracy / ceiling if accuracy is not None and ceiling else None,
                    "gold_parts": parts_after,
                    "gold_parts_sft": parts_sft,
                    "rm_accuracy_correctness_pairs": on_correctness and on_correctness[0],
                    "labels_accuracy_correctness_pairs": on_correctness and on_correctness[1],
                    "correctness_pairs": on_correctness and on_correctness[2],
                    "warnings": result.get("warnings", []),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        services.stop()
    print(
        f"data dir (kept): {services.data_dir}; round N's reward model is rounds/<its job id>/reward "
        f"(job ids {', '.join(str(r['job_id']) for r in rows)})"
    )
    return rows


def pct(v):
    return "–" if v is None else f"{100 * v:.1f}%"


def num(v):
    return "–" if v is None else f"{v:.2f}"


def print_rounds(args: argparse.Namespace, rows: list[dict]) -> None:
    print(
        f"\nRLHF efficacy, {args.size} world, {args.labels} simulated labels per round "
        f"({args.annotators} annotators, {args.careless} careless, {args.adversarial} adversarial, noise {args.noise}, "
        f"overlap {args.overlap}), eval prompts {args.eval_prompts} x {args.eval_samples} samples"
    )
    print(
        "| round | labels | gold win-rate vs SFT | KL to SFT | mean length (SFT) | RM held-out acc | "
        "label ceiling | RM / ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        se = f" ± {100 * r['gold_win_rate_se']:.1f}" if r.get("gold_win_rate_se") is not None else ""
        print(
            f"| {r['round']} | {r['labels']} | {pct(r['gold_win_rate_vs_sft'])}{se} | {num(r['kl_to_sft'])} | "
            f"{num(r['mean_length'])} ({num(r['mean_length_sft'])}) | {pct(r['rm_accuracy'])} | "
            f"{pct(r['label_ceiling'])} | {pct(r['rm_vs_ceiling'])} |"
        )
    print(
        "\nWhat changed: mean of each part of the gold score on the eval prompts, new policy (SFT); and on the "
        "held-out pairs whose responses differ in correctness, how often the reward model and the labels order them "
        "as the gold judge does"
    )
    print("| round | " + " | ".join(GOLD_PARTS) + " | RM on right-vs-wrong pairs | labels on them |")
    print("|---|" + "---|" * (len(GOLD_PARTS) + 2))
    for r in rows:
        after, before = r["gold_parts"] or {}, r["gold_parts_sft"] or {}
        print(
            f"| {r['round']} | "
            + " | ".join(f"{num(after.get(n))} ({num(before.get(n))})" for n in GOLD_PARTS)
            + f" | {pct(r['rm_accuracy_correctness_pairs'])} | {pct(r['labels_accuracy_correctness_pairs'])} "
            f"(n {r['correctness_pairs'] or 0}) |"
        )


# The reliability arms: (name, changes to the bench's arguments). Same seeds, 6 annotators, overlap 3 in each.
RELIABILITY_ARMS = (
    ("all honest", {"careless": 0, "annotator_weighting": None}),
    ("2 careless, unweighted", {"careless": 2, "annotator_weighting": None}),
    ("2 careless, dawid_skene", {"careless": 2, "annotator_weighting": "dawid_skene"}),
)


def reliability_goal(arms: dict[str, dict]) -> dict[str, bool]:
    """The issue's goal on the last round: weighted within 1 point of honest and >= 3 points above unweighted, on
    the gold win-rate and on RM / ceiling."""
    honest, unweighted, weighted = (arms[name] for name, _ in RELIABILITY_ARMS)
    out = {}
    for key in ("gold_win_rate_vs_sft", "rm_vs_ceiling"):
        h, u, w = honest.get(key), unweighted.get(key), weighted.get(key)
        out[key] = None not in (h, u, w) and abs(w - h) <= 0.01 and w - u >= 0.03
    return out


def run_reliability_arms(args: argparse.Namespace, world: Path, size) -> int:
    finals: dict[str, dict] = {}
    every: dict[str, list[dict]] = {}
    for name, changes in RELIABILITY_ARMS:
        arm = argparse.Namespace(**{**vars(args), "annotators": 6, "overlap": max(args.overlap, 3), **changes})
        print(f"\n=== arm: {name} ===", file=sys.stderr, flush=True)
        rows = run_arm(arm, world, size)
        print_rounds(arm, rows)
        every[name] = rows
        finals[name] = rows[-1] if rows else {}
    print(f"\nReliability arms, {args.size} world, round {args.rounds}, 6 annotators, overlap {max(args.overlap, 3)}")
    print("| arm | gold win-rate vs SFT | RM held-out acc | label ceiling | RM / ceiling |")
    print("|---|---|---|---|---|")
    for name, final in finals.items():
        print(
            f"| {name} | {pct(final.get('gold_win_rate_vs_sft'))} | {pct(final.get('rm_accuracy'))} | "
            f"{pct(final.get('label_ceiling'))} | {pct(final.get('rm_vs_ceiling'))} |"
        )
    goal = reliability_goal(finals)
    print(
        "\ngoal (weighted within 1 point of all honest, >= 3 points above unweighted): "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goal.items())
    )
    out = ROOT / "bench" / "out" / "rlhf_efficacy_reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    args_json = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out.write_text(json.dumps({"args": args_json, "arms": every, "goal": goal}, indent=2))
    return 0


def main() -> int:
    args = parse_args()
    size = SIZES[args.size]
    if args.max_new_tokens:
        size = dataclasses.replace(size, max_new_tokens=args.max_new_tokens)
    started = time.perf_counter()
    world = prepare_world(args.size, args.world_dir, args.reuse_world)
    if args.reliability_arms:
        return run_reliability_arms(args, world, size)
    rows = run_arm(args, world, size)
    print_rounds(args, rows)
    out = ROOT / "bench" / "out" / "rlhf_efficacy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "rounds": rows,
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )
    final = rows[-1] if rows else {}
    goal = (final.get("gold_win_rate_vs_sft") or 0) >= 0.7 and (final.get("rm_vs_ceiling") or 0) >= 0.9
    print(
        f"\ngoal (gold win-rate >= 70%, RM >= 90% of the ceiling) after round {final.get('round')}: "
        f"{'met' if goal else 'NOT met'}; total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except JobDidNotSucceed as exc:  # one line, as a refused round ends the run
        sys.exit(str(exc))
