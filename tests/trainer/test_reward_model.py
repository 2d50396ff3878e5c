import json
import math
import random
import subprocess
import sys

import pytest
import torch

from tests.factories import GOOD, NEUTRAL, build_tiny_lm, run_metrics, synthetic_pair, write_jsonl
from trainer.config import load_config
from trainer.masks import pad_sequences
from trainer.reward_model import RewardConfig, train_reward
from trainer.reward_scoring import RewardScorer, evaluate_pairs, load_reward_model
from trainer.runtime import load_tokenizer


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def pref_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pref")
    rng = random.Random(7)
    train = write_jsonl(d / "train.jsonl", [synthetic_pair(rng) for _ in range(320)])
    held = write_jsonl(d / "eval.jsonl", [synthetic_pair(rng) for _ in range(100)])
    return train, held


def _train(tmp_path, lm_dir, data, name="rm", **kw):
    kw.setdefault("lr", 3e-3)
    kw.setdefault("batch_size", 16)
    cfg = load_config(
        RewardConfig,
        overrides={"model": str(lm_dir), "data": str(data), "out": str(tmp_path / name), "device": "cpu", **kw},
    )
    out = train_reward(cfg)
    return out, run_metrics(out)


def test_identical_responses_count_half_in_held_out_accuracy(tmp_path, lm_dir):
    """A sampled ranking can hold the same response twice; no model orders those, so they are not errors (strict
    d > 0 scored this file 0.0: the two scores of each pair are bitwise equal)."""
    from trainer.preference_data import load_preferences

    tok = load_tokenizer(lm_dir)
    model = load_reward_model(lm_dir, tok)
    same = write_jsonl(
        tmp_path / "same.jsonl",
        [
            {"prompt": "Q: hi\nA:", "chosen": " good", "rejected": " good"},
            {"prompt": "Q: yo\nA:", "chosen": " ok then", "rejected": " ok then"},
            {"prompt": "Q: so\nA:", "completions": [" fine", " fine", " fine"]},
        ],
    )
    groups = load_preferences(same, tok).groups
    assert evaluate_pairs(RewardScorer(model), groups, pad_token_id=tok.pad_token_id, device="cpu")["accuracy"] == 0.5


def test_head_init_and_score_at_last_real_token_under_both_paddings(lm_dir):
    tok = load_tokenizer(lm_dir)
    model = load_reward_model(lm_dir, tok, new_head_seed=3)
    d = model.score.weight.shape[-1]
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert abs(float(model.score.weight.detach().std()) - 1 / math.sqrt(d + 1)) < 0.08
    seqs = [tok(" na ga gb gc")["input_ids"] + [tok.eos_token_id], tok(" nb")["input_ids"] + [tok.eos_token_id]]
    scorer = RewardScorer(model)
    with torch.no_grad():
        right = scorer(*pad_sequences(seqs, pad_token_id=tok.pad_token_id, side="right"))
        left = scorer(*pad_sequences(seqs, pad_token_id=tok.pad_token_id, side="left"))
        alone = torch.cat([scorer(*pad_sequences([s], pad_token_id=tok.pad_token_id)) for s in seqs])
    assert torch.allclose(right, left, atol=1e-4)
    assert torch.allclose(right, alone, atol=1e-4)
    # reading the score one token later (the first PAD) would give a different number
    with torch.no_grad():
        ids, mask = pad_sequences(seqs, pad_token_id=tok.pad_token_id, side="right")
        hidden = scorer.hidden_states(ids, mask)
        after_eos = model.score(hidden[1, len(seqs[1])]).squeeze()
    assert abs(float(after_eos) - float(right[1])) > 1e-4


def test_early_stopping_keeps_the_pass_with_the_best_held_out_loss(tmp_path, lm_dir, pref_files):
    """Held-out pairs ordered against the training labels: the held-out loss is lowest before training moves far,
    so the run stops `patience` passes after its best one, well before the cap, and saves the best pass's weights."""
    train, held = pref_files
    flipped = [
        {"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}
        for r in map(json.loads, held.read_text().splitlines())
    ]
    against = write_jsonl(tmp_path / "against.jsonl", flipped)
    out, lines = _train(tmp_path, lm_dir, train, eval_data=str(against), max_epochs=10, early_stopping_patience=2)
    per_pass = math.ceil(320 / 16)
    passes = [x for x in lines[:-1] if "eval_loss" in x]
    assert [x["step"] for x in passes] == [per_pass * (i + 1) for i in range(len(passes))]
    final = lines[-1]
    best = min(passes, key=lambda x: x["eval_loss"])
    assert final["best_step"] == best["step"] and final["stopped_step"] == best["step"] + 2 * per_pass
    assert final["stopped_step"] < 10 * per_pass  # stopped early: the cap is 10 passes
    # the saved model is the best pass's: its held-out loss is the one measured then (centring shifts both scores)
    assert final["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-4)
    # with no held-out data the run is --epochs passes long
    _, plain = _train(tmp_path, lm_dir, train, name="plain", epochs=1, early_stopping_patience=2)
    assert plain[-1]["step"] == per_pass and "best_step" not in plain[-1]


def test_rm_learns_synthetic_preference_and_loads_with_auto_class(tmp_path, lm_dir, pref_files):
    from transformers import AutoModelForSequenceClassification

    train, held = pref_files
    out, lines = _train(tmp_path, lm_dir, train, eval_data=str(held), epochs=2)
    final = lines[-1]
    assert final["eval_accuracy"] >= 0.95, final
    assert lines[0]["loss"] > lines[-2]["loss"]
    for key in ("loss", "accuracy", "margin", "reward_mean", "reward_std", "lr", "grad_norm"):
        assert key in lines[0]
    assert all(set(x) >= {"step", "total_steps"} for x in lines)
    cfg = json.loads((out / "trainer_config.json").read_text())
    assert cfg["stage"] == "reward" and cfg["lr"] == 3e-3
    # HF's own class scores the same as our reader (right padding; pad_token_id saved in the config)
    tok = load_tokenizer(out)
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids, mask = pad_sequences(
        [tok(" na ga gb")["input_ids"] + [tok.eos_token_id], tok(" bb")["input_ids"] + [tok.eos_token_id]],
        pad_token_id=tok.pad_token_id,
    )
    with torch.no_grad():
        ours = RewardScorer(load_reward_model(out, tok))(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert float(ours[0]) > float(ours[1])  # good words score higher
    # centred after training: the preferred responses of the training data average ~0
    assert abs(final["reward_offset"]) > 0
    rows = [json.loads(x) for x in train.read_text().splitlines()][:64]
    ids, mask = pad_sequences(
        [tok(r["prompt"] + r["chosen"])["input_ids"] + [tok.eos_token_id] for r in rows], pad_token_id=tok.pad_token_id
    )
    with torch.no_grad():
        assert abs(float(RewardScorer(load_reward_model(out, tok))(ids, mask).mean())) < 0.5


def test_same_seed_same_numbers_and_microbatch_invariance(tmp_path, lm_dir, pref_files):
    train, _ = pref_files
    kw = dict(max_steps=4, center_on_chosen=False)
    _, a = _train(tmp_path, lm_dir, train, "a", **kw)
    _, b = _train(tmp_path, lm_dir, train, "b", **kw)
    _, c = _train(tmp_path, lm_dir, train, "c", micro_batch_size=3, **kw)
    assert a == b
    for x, y in zip(a[:-1], c[:-1]):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-4), (x, y)
        assert math.isclose(x["grad_norm"], y["grad_norm"], rel_tol=1e-3), (x, y)


def test_max_steps_replaces_epochs(tmp_path, lm_dir, pref_files):
    train, _ = pref_files  # 320 pairs, 64 a step: one epoch is 5 steps
    _, lines = _train(tmp_path, lm_dir, train, "long", epochs=1, batch_size=64, max_steps=7, center_on_chosen=False)
    assert [line["step"] for line in lines[:-1]] == list(range(1, 8))
    assert math.isclose(lines[-2]["epoch"], 7 / 5)


def test_rankings_and_kto_train(tmp_path, lm_dir):
    rng = random.Random(1)

    def resp(n_good):
        words = [rng.choice(GOOD) for _ in range(n_good)] + [rng.choice(NEUTRAL) for _ in range(6 - n_good)]
        rng.shuffle(words)
        return " " + " ".join(words)

    ranks = [{"prompt": " na", "completions": [resp(6), resp(3), resp(0)]} for _ in range(48)]
    _, lines = _train(tmp_path, lm_dir, write_jsonl(tmp_path / "r.jsonl", ranks), "r", epochs=2, batch_size=8)
    assert lines[-1]["train_pairs"] == 48 * 3
    assert lines[-2]["accuracy"] >= 0.9
    kto = []
    for i in range(40):
        kto += [
            {"prompt": f" n{'abcd'[i % 4]}", "completion": resp(5), "label": True},
            {"prompt": f" n{'abcd'[i % 4]}", "completion": resp(1), "label": False},
        ]
    _, lines = _train(tmp_path, lm_dir, write_jsonl(tmp_path / "k.jsonl", kto), "k", batch_size=2)
    assert lines[-1]["train_pairs"] == 4 * 10 * 10  # every good x bad within each of 4 prompts


def test_cli_bad_data_exits_2_naming_file_and_line(tmp_path, lm_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "reward",
            "--model",
            str(lm_dir),
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert f"{bad}:2:" in r.stderr
    assert not (tmp_path / "o").exists()


def test_fast_kernels_keep_the_function(lm_dir):
    from trainer.runtime import use_fast_kernels_

    tok = load_tokenizer(lm_dir)
    ids, mask = pad_sequences(
        [tok(" na ga gb")["input_ids"] + [tok.eos_token_id], tok(" bb")["input_ids"]],
        pad_token_id=tok.pad_token_id,
        side="left",
    )
    model = load_reward_model(lm_dir, tok)
    with torch.no_grad():
        before = RewardScorer(model)(ids, mask)
        use_fast_kernels_(model, torch.device("cpu"), "bf16")
        assert type(model.transformer.h[0].mlp.act).__name__ == "GELU"
        after = RewardScorer(model)(ids, mask)  # eager attention now, fp32 here
    assert torch.allclose(before, after, atol=1e-5)


# ----------------------------------------------------------------------------- likelihood feature


@pytest.fixture(scope="module")
def peaked_lm_dir(tmp_path_factory):
    """The tiny LM with its embeddings scaled up: sharp next-token distributions, so sequences differ in
    log-likelihood by nats (a random tiny LM is nearly uniform)."""
    from transformers import GPT2LMHeadModel

    d = build_tiny_lm(tmp_path_factory.mktemp("peaked-lm"), seed=4)
    lm = GPT2LMHeadModel.from_pretrained(d)
    with torch.no_grad():
        lm.transformer.wte.weight.mul_(20.0)
    lm.save_pretrained(d)
    return d


def _manual_mean_logprob(lm, seq, prompt_len):
    with torch.no_grad():
        logits = lm(torch.tensor([seq])).logits[0]  # [T, V], one row: no padding at all
    lp = torch.log_softmax(logits[:-1].float(), -1).gather(-1, torch.tensor(seq)[1:, None]).squeeze(-1)
    return float(lp[prompt_len - 1 :].mean())  # tokens prompt_len .. T-1 (the response and its EOS)


def test_likelihood_feature_is_the_mean_response_logprob_for_either_padding(peaked_lm_dir):
    from trainer.reward_scoring import LikelihoodFeature
    from trainer.runtime import load_causal_lm

    tok = load_tokenizer(peaked_lm_dir)
    lm = load_causal_lm(peaked_lm_dir, tokenizer=tok)
    feature = LikelihoodFeature(lm, str(peaked_lm_dir), weight=2.0)
    prompts = [tok(" na nb nc")["input_ids"], tok(" nd")["input_ids"]]
    responses = [tok(" ga")["input_ids"], tok(" gb bb ga na")["input_ids"]]
    seqs = [p + r + [tok.eos_token_id] for p, r in zip(prompts, responses)]
    lengths = torch.tensor([len(p) for p in prompts])
    want = torch.tensor([_manual_mean_logprob(lm, s, len(p)) for s, p in zip(seqs, prompts)])
    for side in ("right", "left"):
        ids, mask = pad_sequences(seqs, pad_token_id=tok.pad_token_id, side=side)
        got = feature.mean_logprob(ids, mask, lengths)
        assert torch.allclose(got, want, atol=1e-4), (side, got, want)
        assert torch.allclose(feature(ids, mask, lengths), 2.0 * want, atol=1e-4)
    assert not any(p.requires_grad for p in feature.lm.parameters())


def _likelihood_ordered_pairs(feature, tok, n, seed):
    """Pairs whose better response is the one the LM finds more likely: only the feature can order them."""
    rng = random.Random(seed)
    words = GOOD + NEUTRAL
    rows = []
    for _ in range(n):
        prompt = " " + " ".join(rng.choice(NEUTRAL) for _ in range(3))
        a, b = (" " + " ".join(rng.choice(words) for _ in range(4)) for _ in range(2))
        seqs = [tok(prompt + r)["input_ids"] + [tok.eos_token_id] for r in (a, b)]
        ids, mask = pad_sequences(seqs, pad_token_id=tok.pad_token_id)
        plen = len(tok(prompt)["input_ids"])
        fa, fb = feature.mean_logprob(ids, mask, torch.tensor([plen, plen])).tolist()
        rows.append({"prompt": prompt, "chosen": a if fa > fb else b, "rejected": b if fa > fb else a})
    return rows


def test_rm_learns_to_read_its_likelihood_feature_and_every_reader_applies_it(tmp_path, peaked_lm_dir):
    from trainer.judges import load_judge
    from trainer.reward_scoring import LIKELIHOOD_FILE, LikelihoodFeature, load_reward_scorer
    from trainer.runtime import load_causal_lm

    lm_tok = load_tokenizer(peaked_lm_dir)
    lm_feature = LikelihoodFeature(load_causal_lm(peaked_lm_dir, tokenizer=lm_tok), str(peaked_lm_dir))
    train = write_jsonl(tmp_path / "train.jsonl", _likelihood_ordered_pairs(lm_feature, lm_tok, 160, seed=1))
    held = write_jsonl(tmp_path / "held.jsonl", _likelihood_ordered_pairs(lm_feature, lm_tok, 60, seed=2))
    # the backbone and head barely move (lr 1e-8): what orders held-out pairs is the feature's weight or nothing
    common = dict(eval_data=str(held), lr=1e-8, epochs=3, likelihood_lr=0.5, early_stopping_patience=0)
    _, plain = _train(tmp_path, peaked_lm_dir, train, name="plain", **common)
    out, lines = _train(tmp_path, peaked_lm_dir, train, name="feature", likelihood_model=str(peaked_lm_dir), **common)
    assert plain[-1]["eval_accuracy"] < 0.75, plain[-1]
    assert lines[-1]["eval_accuracy"] >= 0.9, lines[-1]
    spec = json.loads((out / LIKELIHOOD_FILE).read_text())
    assert (out / spec["model"]).resolve() == peaked_lm_dir.resolve() and spec["weight"] > 1.0
    assert lines[-2]["likelihood_weight"] == pytest.approx(spec["weight"])
    # reloaded, it scores held-out pairs as it did at the end of training
    tok = load_tokenizer(out)
    from trainer.preference_data import load_preferences

    groups = load_preferences(held, tok).groups
    scorer = load_reward_scorer(out, tok)
    assert scorer.likelihood is not None
    again = evaluate_pairs(scorer, groups, pad_token_id=tok.pad_token_id, device="cpu")
    assert again["accuracy"] == pytest.approx(lines[-1]["eval_accuracy"])
    # the rm: judge (best-of-n, label-ai, evaluate) = head + weight * feature on prompt + response text
    rows = [json.loads(x) for x in held.read_text().splitlines()][:4]
    judged = load_judge(f"rm:{out}", "cpu", "fp32")([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    seqs = [tok(r["prompt"] + r["chosen"])["input_ids"] + [tok.eos_token_id] for r in rows]
    ids, mask = pad_sequences(seqs, pad_token_id=tok.pad_token_id)
    lengths = torch.tensor([len(tok(r["prompt"])["input_ids"]) for r in rows])
    with torch.no_grad():
        head = RewardScorer(load_reward_model(out, tok))(ids, mask)
        want = head + spec["weight"] * scorer.likelihood.mean_logprob(ids, mask, lengths)
    assert torch.allclose(torch.tensor(judged), want, atol=1e-4)
    assert not torch.allclose(head, want, atol=1e-2)


def test_a_reward_model_whose_likelihood_model_is_gone_is_refused(tmp_path, lm_dir, pref_files):
    import shutil

    from trainer.config import UsageError
    from trainer.reward_scoring import LIKELIHOOD_FILE, load_reward_scorer

    lm_copy = shutil.copytree(lm_dir, tmp_path / "lm-copy")
    out, _ = _train(tmp_path, lm_dir, pref_files[0], max_steps=1, likelihood_model=str(lm_copy))
    assert (out / LIKELIHOOD_FILE).is_file()
    shutil.rmtree(lm_copy)
    with pytest.raises(UsageError, match="likelihood model .* is missing"):
        load_reward_scorer(out, load_tokenizer(out))


def test_gradient_checkpointing_and_bf16_weights(tmp_path, lm_dir, pref_files):
    train, _ = pref_files
    kw = dict(max_steps=2, center_on_chosen=False)
    _, plain = _train(tmp_path, lm_dir, train, "plain", **kw)
    _, checkpointed = _train(tmp_path, lm_dir, train, "gc", gradient_checkpointing=True, **kw)
    for x, y in zip(plain, checkpointed, strict=True):
        assert math.isclose(x.get("loss", 0.0), y.get("loss", 0.0), rel_tol=1e-4), (x, y)
    out, bf16 = _train(tmp_path, lm_dir, train, "bf16", precision="bf16", **kw)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert math.isclose(bf16[0]["loss"], plain[0]["loss"], rel_tol=0.05)


def test_the_loss_is_the_weighted_mean_over_groups(tmp_path, lm_dir, pref_files):
    """Weight 0 takes a line out of the loss (its gradient too), and scaling every weight changes nothing: the
    batch's loss is sum(w * loss) / sum(w). One batch holds every line, so the shuffle cannot tell the runs apart."""
    train, _ = pref_files
    rows = [json.loads(x) for x in train.read_text().splitlines()][:48]
    flipped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"], "weight": 0.0} for r in rows[:16]]
    plain = write_jsonl(tmp_path / "plain.jsonl", rows)
    doubled = write_jsonl(tmp_path / "doubled.jsonl", [{**r, "weight": 2.0} for r in rows])
    with_zero = write_jsonl(tmp_path / "zero.jsonl", rows + flipped)
    kw = dict(max_steps=3, center_on_chosen=False, batch_size=64)
    _, a = _train(tmp_path, lm_dir, plain, "plain", **kw)
    _, b = _train(tmp_path, lm_dir, doubled, "doubled", **kw)
    _, c = _train(tmp_path, lm_dir, with_zero, "zero", **kw)
    for x, y, z in zip(a[:-1], b[:-1], c[:-1]):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-5), (x, y)
        assert math.isclose(x["loss"], z["loss"], rel_tol=1e-4), (x, z)
        assert math.isclose(x["grad_norm"], z["grad_norm"], rel_tol=1e-3), (x, z)
    _, d = _train(
        tmp_path,
        lm_dir,
        write_jsonl(tmp_path / "all.jsonl", rows + [dict(r, weight=1.0) for r in flipped]),
        "all",
        **kw,
    )
    assert not math.isclose(a[0]["loss"], d[0]["loss"], rel_tol=1e-3)  # the same lines at weight 1 do count
