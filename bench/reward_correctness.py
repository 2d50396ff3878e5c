"""Can a reward model of the embedded world tell a right answer from a wrong one? The anchor is the SFT model's own
log-likelihood on the same pairs, measured in the same run.

    .venv/bin/python bench/reward_correctness.py                                  # the SFT model alone
    .venv/bin/python bench/reward_correctness.py --reward-model DATA/rounds/4/reward --train-synthetic 1000 5000
    .venv/bin/python bench/reward_correctness.py --round-dir DATA/rounds/4      # label noise or capacity?

Why: `bench/rlhf_efficacy.py` shows rounds that learn style but not correctness. This bench says where that comes
from. It uses the world in --world-dir (build it first: bench/rlhf_efficacy.py, or `python -m trainer.world build`).
1. It samples the SFT model on the eval prompts (K at the labelling temperature, and once greedy) with
   `python -m trainer generate`. From those samples it gives the style-only ceiling: the gold win-rate against the
   SFT samples of a policy with the SFT model's correctness and a perfect style. It also gives the same figure with
   greedy correctness (sharper sampling).
2. Two kinds of pairs:
   - real: two SFT samples for one prompt that differ in correctness (judge.assess) and in nothing else the judge
     grades;
   - synthetic: the right answer against the world's typical wrong one (`Kind.wrong`), after the same opener.
3. Each kind is ordered by the SFT model's log-likelihood (the anchor) and by every reward model given:
   --reward-model DIR, and with --train-synthetic N, a reward model trained (`python -m trainer reward`, SFT init)
   on N synthetic pairs of train prompts.
4. With --round-dir, label noise or capacity: the round's reward stage is rerun (its own reward.config.json) on its
   training pairs as labelled and as the gold judge orders them, and both are scored on the round's held-out pairs
   against the label-noise ceiling of bench/rlhf_efficacy.py. If the noise-free one is not much better, the reward
   model is held back by what it can learn, not by the labels.
Results: printed, and written as JSON to bench/out/reward_correctness.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.evaluate import win_rate  # noqa: E402
from trainer.judges import load_judge  # noqa: E402
from trainer.runtime import load_causal_lm, load_tokenizer  # noqa: E402
from trainer.world import questions, styles  # noqa: E402
from trainer.world.judge import W_CONCISE, W_CORRECT, W_HELPFUL, W_POLITE, Assessment, assess, score  # noqa: E402
from trainer.world.prompts import question_of  # noqa: E402

Pair = tuple[str, str, str]  # (prompt, right, wrong)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def generate(model: Path, prompts: Path, out: Path, *, samples: int, temperature: float, max_new_tokens: int) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "generate",
            "--model",
            str(model),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--num-samples",
            str(samples),
            "--temperature",
            str(temperature),
            "--max-new-tokens",
            str(max_new_tokens),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return out


def style_part(a: Assessment) -> float:
    """The gold score without its correctness term: what two answers differing only in being right share."""
    return a.score - W_CORRECT * a.correct


def ideal_style_score(a: Assessment) -> float:
    """The gold score of the same answer, equally right, in the judge's ideal style (helpful, concise, polite, no
    penalty); an answer of the wrong kind stays unhelpful."""
    return W_CORRECT * a.correct + W_CONCISE + W_POLITE + (W_HELPFUL if a.helpful > 0 else 0.0)


def all_pairs_win_rate(policy: list[float], baseline: list[float]) -> float:
    """trainer.evaluate's win-rate (ties half) over every (policy, baseline) pair of one prompt."""
    return win_rate([p for p in policy for _ in baseline], [b for _ in policy for b in baseline])["win_rate"]


def style_ceilings(sampled: dict[str, list[Assessment]], greedy: dict[str, Assessment]) -> dict[str, float]:
    """Gold win-rates against the SFT samples of the two hypothetical policies in the docstring."""
    same, sharp = [], []
    for pid, answers in sampled.items():
        baseline = [a.score for a in answers]
        same.append(all_pairs_win_rate([ideal_style_score(a) for a in answers], baseline))
        sharp.append(all_pairs_win_rate([ideal_style_score(greedy[pid])], baseline))
    return {
        "sft_correctness_ideal_style": sum(same) / len(same),
        "greedy_correctness_ideal_style": sum(sharp) / len(sharp),
    }


def real_pairs(prompts: dict[str, str], samples: list[dict]) -> list[Pair]:
    by_prompt = defaultdict(list)
    for row in samples:
        by_prompt[row["prompt_id"]].append(row["text"])
    pairs = []
    for pid, texts in by_prompt.items():
        graded = [assess(prompts[pid], t) for t in texts]
        for i, a in enumerate(graded):
            for j, b in enumerate(graded):
                if a.correct > b.correct and abs(style_part(a) - style_part(b)) < 1e-6:
                    pairs.append((prompts[pid], texts[i], texts[j]))
    return pairs


def synthetic_pairs(prompts: list[str], per_prompt: int, seed: int) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for prompt in prompts:
        parsed = questions.parse_question(question_of(prompt))
        if parsed is None:
            continue
        for _ in range(per_prompt):
            opener = rng.choice(styles.POLITE_OPENERS)
            right = f" {opener} {parsed.kind.core(parsed.slots)}"
            wrong = f" {opener} {parsed.kind.wrong(parsed.slots, rng)}"
            if score(prompt, right) > score(prompt, wrong):
                pairs.append((prompt, right, wrong))
    return pairs


@torch.no_grad()
def loglik_accuracy(model_dir: Path, pairs: list[Pair], temperature: float) -> float:
    """Share of pairs whose right answer the causal LM finds more likely (summed log-probabilities, EOS included,
    logits at `temperature`, as the answers were sampled)."""
    tok = load_tokenizer(model_dir)
    lm = load_causal_lm(model_dir, "cpu", tokenizer=tok)

    def loglik(prompt: str, response: str) -> float:
        start = len(tok(prompt)["input_ids"])
        ids = torch.tensor([tok(prompt + response)["input_ids"] + [tok.eos_token_id]])
        logprobs = torch.log_softmax(lm(ids).logits[0, :-1].float() / max(temperature, 1e-6), -1)  # [T-1, V]
        return logprobs.gather(-1, ids[0, 1:, None])[start - 1 :].sum().item()

    return sum(loglik(p, right) > loglik(p, wrong) for p, right, wrong in pairs) / len(pairs)


def rm_accuracy(reward_dir: Path, pairs: list[Pair]) -> float:
    judge = load_judge(f"rm:{reward_dir}", "cpu", "fp32")
    right = judge([p for p, _, _ in pairs], [r for _, r, _ in pairs])
    wrong = judge([p for p, _, _ in pairs], [w for _, _, w in pairs])
    return sum(r > w for r, w in zip(right, wrong)) / len(pairs)


@dataclass(frozen=True)
class LabelledPair:
    prompt: str
    better: str  # as the label orders them
    worse: str
    gold_better: Assessment  # the gold judge on each
    gold_worse: Assessment


def labelled_pairs(path: Path) -> list[LabelledPair]:
    """Every pair of a round's reward_eval.jsonl (pairwise choices, and all pairs of each ranking), in label order,
    each response graded by the gold judge once."""
    if not path.is_file():
        return []
    pairs = []
    for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()):
        ordered = row["completions"] if "completions" in row else [row["chosen"], row["rejected"]]  # best first
        graded = [assess(row["prompt"], text) for text in ordered]
        pairs += [
            LabelledPair(row["prompt"], ordered[i], ordered[j], graded[i], graded[j])
            for i in range(len(ordered))
            for j in range(i + 1, len(ordered))
        ]
    return pairs


def heldout_ceiling(pairs: list[LabelledPair]) -> float | None:
    """The label-noise ceiling of the reward model's held-out accuracy: the accuracy the gold judge itself gets on
    exactly those held-out pairs, a gold tie counting half. A perfect reward model reaches it; noisy labels keep it
    below 100%."""
    right = sum(
        1.0 if p.gold_better.score > p.gold_worse.score else 0.5 if p.gold_better.score == p.gold_worse.score else 0.0
        for p in pairs
    )
    return right / len(pairs) if pairs else None


def accuracy_on_correctness_pairs(reward_dir: Path, pairs: list[LabelledPair]) -> tuple[float, float, int] | None:
    """The reward model's and the labels' accuracy against the gold judge on the held-out pairs whose two responses
    differ in correctness (judge.assess: one right, one not): whether the reward model learnt what is right or only
    how to say it. -> (reward model, labels, pair count)."""
    differing = [p for p in pairs if p.gold_better.correct != p.gold_worse.correct]
    if not differing or not (reward_dir / "config.json").is_file():
        return None
    right_wrong = [
        (p.prompt, p.better, p.worse) if p.gold_better.correct > p.gold_worse.correct else (p.prompt, p.worse, p.better)
        for p in differing
    ]
    labels_right = sum(p.gold_better.correct > p.gold_worse.correct for p in differing)
    return rm_accuracy(reward_dir, right_wrong), labels_right / len(differing), len(differing)


def gold_ordered(row: dict) -> dict:
    """A preference row of a round's training file reordered by the gold judge: the same pairs without label noise
    (a gold tie keeps the label's order)."""
    if "completions" in row:
        return {**row, "completions": sorted(row["completions"], key=lambda text: -score(row["prompt"], text))}
    if score(row["prompt"], row["rejected"]) > score(row["prompt"], row["chosen"]):
        return {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
    return row


def rerun_round_reward(round_dir: Path, data: Path, out: Path) -> Path:
    """The round's reward stage again (its reward.config.json: initial model, hyperparameters, seed, held-out file),
    trained on `data` into `out`."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "reward",
            "--config",
            str(round_dir / "reward.config.json"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return out


def noise_or_capacity(round_dir: Path, work: Path) -> dict:
    """Is the round's reward model held back by label noise or by what it can learn? Its stage is rerun on the same
    training pairs, as labelled and as the gold judge orders them, and both are scored on the held-out pairs."""
    rows = read_jsonl(round_dir / "reward_train.jsonl")
    gold_file = work / "reward_train_gold_ordered.jsonl"
    gold_file.write_text("".join(json.dumps(gold_ordered(row)) + "\n" for row in rows), encoding="utf-8")
    held = labelled_pairs(round_dir / "reward_eval.jsonl")
    result = {
        "round_dir": str(round_dir),
        "train_rows": len(rows),
        "heldout_pairs": len(held),
        "label_ceiling": heldout_ceiling(held),
    }
    for name, data in (("as_labelled", round_dir / "reward_train.jsonl"), ("gold_ordered", gold_file)):
        rm = rerun_round_reward(round_dir, data, work / f"rm-{name}")
        on_correctness = accuracy_on_correctness_pairs(rm, held)
        result[name] = {
            "heldout_accuracy": read_jsonl(rm / "metrics.jsonl")[-1]["eval_accuracy"],
            "right_vs_wrong": on_correctness and on_correctness[0],
        }
    return result


def train_synthetic_rm(sft: Path, pairs: list[Pair], out: Path, *, epochs: int, lr: float) -> Path:
    data = out.with_suffix(".jsonl")
    data.write_text("".join(json.dumps({"prompt": p, "chosen": r, "rejected": w}) + "\n" for p, r, w in pairs))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "reward",
            "--model",
            str(sft),
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            str(epochs),
            "--lr",
            str(lr),
            "--batch-size",
            "16",
            "--seed",
            "0",
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-dir", type=Path, default=ROOT / "bench" / "out" / "world-small")
    parser.add_argument("--reward-model", type=Path, nargs="*", default=[], help="reward model directories to test")
    parser.add_argument(
        "--train-synthetic",
        type=int,
        nargs="*",
        default=[],
        help="also train a reward model on this many synthetic pairs of train prompts (each N)",
    )
    parser.add_argument(
        "--round-dir",
        type=Path,
        help="a round of an efficacy run (DATA/rounds/<job id>): rerun its "
        "reward stage on its training pairs as labelled and as ordered by the gold judge",
    )
    parser.add_argument("--rm-epochs", type=int, default=4)
    parser.add_argument("--rm-lr", type=float, default=1e-4)
    parser.add_argument("--k", type=int, default=4, help="SFT samples per eval prompt")
    parser.add_argument("--temperature", type=float, default=0.7, help="the labelling and evaluation temperature")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    world = args.world_dir
    if not (world / "sft" / "config.json").is_file():
        raise SystemExit(f"{world}: no built world (sft/ missing); run bench/rlhf_efficacy.py once to build it")
    work = Path(tempfile.mkdtemp(prefix="reward-correctness-"))
    eval_file = world / "prompts_eval.jsonl"
    prompts = {row["prompt_id"]: row["prompt"] for row in read_jsonl(eval_file)}

    sampled_rows = read_jsonl(
        generate(
            world / "sft",
            eval_file,
            work / "sampled.jsonl",
            samples=args.k,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
        )
    )
    greedy_rows = read_jsonl(
        generate(
            world / "sft",
            eval_file,
            work / "greedy.jsonl",
            samples=1,
            temperature=0.0,
            max_new_tokens=args.max_new_tokens,
        )
    )
    sampled = defaultdict(list)
    for row in sampled_rows:
        sampled[row["prompt_id"]].append(assess(prompts[row["prompt_id"]], row["text"]))
    greedy = {row["prompt_id"]: assess(prompts[row["prompt_id"]], row["text"]) for row in greedy_rows}
    result: dict = {
        "world": str(world),
        "k": args.k,
        "temperature": args.temperature,
        "sft_correct_sampled": sum(a.correct for v in sampled.values() for a in v) / len(sampled_rows),
        "sft_correct_greedy": sum(a.correct for a in greedy.values()) / len(greedy),
        "style_ceilings": style_ceilings(sampled, greedy),
    }
    pair_sets = {"real": real_pairs(prompts, sampled_rows), "synthetic": synthetic_pairs(list(prompts.values()), 3, 0)}
    result["pairs"] = {name: len(pairs) for name, pairs in pair_sets.items()}
    judges: dict[str, dict[str, float]] = {
        "SFT log-likelihood (anchor)": {
            name: loglik_accuracy(world / "sft", pairs, args.temperature) for name, pairs in pair_sets.items()
        }
    }
    for reward_dir in args.reward_model:
        judges[f"RM {reward_dir}"] = {name: rm_accuracy(reward_dir, pairs) for name, pairs in pair_sets.items()}
    train_prompts = [row["prompt"] for row in read_jsonl(world / "prompts_train.jsonl")]
    for n in args.train_synthetic:
        pool = synthetic_pairs(train_prompts, -(-n // len(train_prompts)), seed=1)[:n]
        rm = train_synthetic_rm(world / "sft", pool, work / f"rm-synthetic-{n}", epochs=args.rm_epochs, lr=args.rm_lr)
        judges[f"RM trained on {len(pool)} synthetic pairs"] = {
            name: rm_accuracy(rm, pairs) for name, pairs in pair_sets.items()
        }
    result["accuracy"] = judges
    if args.round_dir:
        result["noise_or_capacity"] = noise_or_capacity(args.round_dir, work)

    print(
        f"SFT model correct: {result['sft_correct_sampled']:.3f} sampled at {args.temperature}, "
        f"{result['sft_correct_greedy']:.3f} greedy"
    )
    ceilings = result["style_ceilings"]
    print(
        f"gold win-rate against SFT of a policy in perfect style: {100 * ceilings['sft_correctness_ideal_style']:.1f}% "
        f"with the SFT model's correctness, {100 * ceilings['greedy_correctness_ideal_style']:.1f}% with its greedy "
        "correctness"
    )
    print(
        f"\nright-vs-wrong pairs ordered right: real (SFT samples, same style; n {result['pairs']['real']}), "
        f"synthetic (right vs the world's wrong answer; n {result['pairs']['synthetic']})"
    )
    print("| judge | real | synthetic | real / anchor |")
    print("|---|---|---|---|")
    anchor = judges["SFT log-likelihood (anchor)"]["real"]
    for name, acc in judges.items():
        print(f"| {name} | {100 * acc['real']:.1f}% | {100 * acc['synthetic']:.1f}% | {acc['real'] / anchor:.2f} |")
    if args.round_dir:
        nc = result["noise_or_capacity"]
        ceiling = nc["label_ceiling"]
        print(
            f"\nlabel noise or capacity? {nc['round_dir']}: its reward stage rerun on its {nc['train_rows']} training "
            f"rows, scored on its {nc['heldout_pairs']} held-out pairs (label ceiling {100 * ceiling:.1f}%)"
        )
        print("| trained on | held-out accuracy | / label ceiling | right-vs-wrong held-out pairs |")
        print("|---|---|---|---|")
        for name, label in (
            ("as_labelled", "the labels (the round's own stage again)"),
            ("gold_ordered", "the same pairs ordered by the gold judge (no label noise)"),
        ):
            row = nc[name]
            rw = "–" if row["right_vs_wrong"] is None else f"{100 * row['right_vs_wrong']:.1f}%"
            print(
                f"| {label} | {100 * row['heldout_accuracy']:.1f}% | {100 * row['heldout_accuracy'] / ceiling:.1f}% "
                f"| {rw} |"
            )
    out = ROOT / "bench" / "out" / "reward_correctness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
