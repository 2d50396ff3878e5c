import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.factories import NEUTRAL, build_tiny_lm, run_metrics, synthetic_pair, write_jsonl
from trainer.config import load_config
from trainer.logprobs import response_logprobs
from trainer.masks import pad_sequences
from trainer.ppo import (
    AdaptiveKLController,
    PPOConfig,
    compute_gae,
    make_rollout,
    penalise_missing_eos,
    policy_loss_terms,
    ppo_minibatch_loss,
    ppo_update,
    train_ppo,
    value_loss_terms,
)
from trainer.reward_model import RewardConfig, train_reward
from trainer.reward_scoring import RewardScorer, load_reward_model
from trainer.runtime import load_causal_lm, load_tokenizer
from trainer.sampling import sample_batch

# ----------------------------------------------------------------------------- golden math


def test_gae_against_hand_computed_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.2, 1.0, 99.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [0.1, 0.2, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: δ2 = 1 - .3 = .7; δ1 = .3 - .4 = -.1 -> A1 = -.1 + .95·.7; δ0 = .4 - .5 -> A0 = -.1 + .95·A1
    a1 = -0.1 + 0.95 * 0.7
    a0 = -0.1 + 0.95 * a1
    assert torch.allclose(adv[0], torch.tensor([a0, a1, 0.7]), atol=1e-6)
    assert torch.allclose(ret[0], torch.tensor([a0 + 0.5, a1 + 0.4, 1.0]), atol=1e-6)
    # row 1: the masked last position is outside the episode: V after the last real token is 0
    assert torch.allclose(adv[1], torch.tensor([0.3 + 0.95 * 0.8, 0.8, 0.0]), atol=1e-6)
    adv_g, _ = compute_gae(rewards[:1], values[:1], mask[:1], gamma=0.9, lam=0.5)
    b1 = 0.9 * 0.3 - 0.4 + 0.45 * 0.7
    assert torch.allclose(adv_g[0], torch.tensor([0.9 * 0.4 - 0.5 + 0.45 * b1, b1, 0.7]), atol=1e-6)


def test_clipped_losses_values():
    new = torch.tensor([[math.log(1.5), math.log(0.5)]])
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, clipped, ratio = policy_loss_terms(new, old, adv, mask, 0.2)
    # +A, ratio 1.5: max(-1.5, -1.2) = -1.2 ; -A, ratio 0.5: max(0.5, 0.8) = 0.8
    assert math.isclose(float(loss), -0.4, abs_tol=1e-6) and float(clipped) == 2
    vl, vclipped = value_loss_terms(
        torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2
    )
    assert math.isclose(float(vl), 0.5 * (2.0 - 0.7) ** 2, abs_tol=1e-6) and float(vclipped) == 1
    # inside the clip range nothing is clipped and the loss is the plain surrogate
    loss2, clipped2, _ = policy_loss_terms(
        torch.tensor([[math.log(1.1)]]), torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2
    )
    assert math.isclose(float(loss2), -2.2, abs_tol=1e-6) and float(clipped2) == 0


def test_adaptive_kl_controller_moves_towards_target():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c.update(current_kl=12.0, n_steps=10)  # too much KL: β grows by at most 20% × n/horizon
    assert math.isclose(c.value, 0.1 * 1.02)
    c.update(current_kl=0.0, n_steps=10)
    assert c.value < 0.1 * 1.02


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("ppo-assets")
    lm = build_tiny_lm(d / "lm", dropout=0.1)
    rng = random.Random(3)
    pref = write_jsonl(d / "pref.jsonl", [synthetic_pair(rng) for _ in range(256)])
    rm = train_reward(RewardConfig(model=str(lm), data=str(pref), out=str(d / "rm"), lr=3e-3, device="cpu"))
    prompts = write_jsonl(
        d / "prompts.jsonl",
        [{"prompt_id": f"p{i}", "prompt": " " + " ".join(rng.choice(NEUTRAL) for _ in range(3))} for i in range(32)],
    )
    return {"lm": lm, "rm": rm, "prompts": prompts, "dir": d}


def _cfg(assets, out, **kw):
    base = dict(
        policy=str(assets["lm"]),
        reward_model=str(assets["rm"]),
        prompts=str(assets["prompts"]),
        out=str(out),
        device="cpu",
        batch_size=8,
        max_new_tokens=6,
        lr=1e-3,
        seed=5,
        max_steps=3,
        epochs=2,
    )
    base.update(kw)
    return load_config(PPOConfig, overrides=base)


def _models(assets):
    tok = load_tokenizer(assets["lm"])
    policy = load_causal_lm(assets["lm"], tokenizer=tok)
    ref = load_causal_lm(assets["lm"], tokenizer=tok).requires_grad_(False)
    reward = RewardScorer(load_reward_model(assets["rm"], tok)).requires_grad_(False)
    value = RewardScorer(load_reward_model(assets["rm"], tok))
    return tok, policy, ref, reward, value


def _batch(tok, n=8):
    return [(f"p{i}", tok(" na nb")["input_ids"] if i % 2 else tok(" nc")["input_ids"]) for i in range(n)]


def _lines(out):
    return run_metrics(out)


def test_max_steps_replaces_epochs(tmp_path, assets):
    # 32 prompts, 8 a step: one epoch is 4 steps; --max-steps 10 runs 10 (it once stopped at the epoch's end)
    lines = _lines(train_ppo(_cfg(assets, tmp_path / "long", epochs=1, max_steps=10)))
    assert [line["step"] for line in lines] == list(range(1, 11))
    assert lines[-1]["episode"] == 80


def test_logprobs_match_the_sampler_at_the_rollout_temperature(assets):
    tok, policy, *_ = _models(assets)
    assert not policy.training  # dropout off (the config has dropout 0.1)
    ids, mask = pad_sequences([ids for _, ids in _batch(tok)], pad_token_id=tok.pad_token_id, side="left")
    gens = [torch.Generator().manual_seed(i) for i in range(ids.shape[0])]
    out = sample_batch(
        policy,
        ids,
        mask,
        max_new_tokens=5,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        generators=gens,
    )
    full = torch.cat([ids, out.tokens], 1)
    full_mask = torch.cat([mask, (torch.arange(5)[None] < out.lengths[:, None]).long()], 1)
    with torch.no_grad():
        lp = response_logprobs(policy, full, full_mask, ids.shape[1], 0.7, banned_token=tok.pad_token_id)
        lp_t1 = response_logprobs(policy, full, full_mask, ids.shape[1], 1.0, banned_token=tok.pad_token_id)
    real = full_mask[:, ids.shape[1] :].bool()
    assert torch.allclose(lp[real], out.logprobs[real], atol=1e-4)
    assert not torch.allclose(lp_t1[real], out.logprobs[real], atol=1e-2)  # the temperature matters


def test_a_truncated_response_scores_below_every_finished_one_whatever_the_scale():
    scores = torch.tensor([5.0, 40.0, -2.0, 100.0])
    finished = torch.tensor([True, False, True, False])
    out = penalise_missing_eos(scores, finished, 1.0)
    assert out[finished].tolist() == [5.0, -2.0]  # finished responses keep their score
    assert out[~finished].tolist() == [-3.0, -3.0]  # a subtracted constant would have left 39 and 99 on top
    assert penalise_missing_eos(scores, finished, 0.0).tolist() == scores.tolist()
    assert penalise_missing_eos(scores, torch.zeros(4, dtype=torch.bool), 1.0).tolist() == [-3.0] * 4


def test_rollout_rewards_kl_and_missing_eos_penalty(assets):
    tok, policy, ref, reward, value = _models(assets)
    cfg = _cfg(assets, assets["dir"] / "unused", max_new_tokens=3, missing_eos_penalty=1.0, kl_coef=0.1)
    r = make_rollout(policy, ref, reward, value, tok, _batch(tok), 0, cfg, 0.1, torch.device("cpu"))
    with torch.no_grad():
        raw = reward(r.ids, r.mask)
    assert torch.allclose(r.scores, penalise_missing_eos(raw, r.finished, 1.0), atol=1e-5)
    assert (~r.finished).any()
    # policy == reference at the start: KL is 0 and the only reward is the score at the last token
    assert float(r.kl.abs().max()) < 1e-5
    assert r.response_mask.sum(1).tolist() == r.lengths.tolist()
    assert float(r.advantages[r.response_mask].mean().abs()) < 1e-5  # whitened


def test_a_ppo_step_lowers_its_loss_on_a_fixed_batch(assets):
    tok, policy, ref, reward, value = _models(assets)
    cfg = _cfg(assets, assets["dir"] / "unused", ppo_epochs=1, lr=3e-3, approxkl_stop=0.0)
    r = make_rollout(policy, ref, reward, value, tok, _batch(tok), 0, cfg, cfg.kl_coef, torch.device("cpu"))
    n = float(r.response_mask.sum())
    idx = torch.arange(r.ids.shape[0])
    with torch.no_grad():
        before, _ = ppo_minibatch_loss(policy, value, r.rows(idx), cfg, n)
    params = list(policy.parameters()) + list(value.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
    for step in range(3):
        ppo_update(policy, value, opt, params, r, step, cfg, torch.device("cpu"))
    with torch.no_grad():
        after, _ = ppo_minibatch_loss(policy, value, r.rows(idx), cfg, n)
    assert float(after) < float(before) - 1e-3, (float(before), float(after))


def test_ppo_raises_reward_with_bounded_kl(tmp_path, assets):
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    out = train_ppo(
        _cfg(
            assets,
            tmp_path / "pol",
            epochs=12,
            max_steps=24,
            batch_size=16,
            lr=2e-3,
            kl_coef=0.05,
            ppo_epochs=4,
            num_minibatches=2,
        )
    )
    elapsed = time.perf_counter() - t0
    lines = _lines(out)
    first = sum(x["objective/scores"] for x in lines[:4]) / 4
    last = sum(x["objective/scores"] for x in lines[-4:]) / 4
    assert last > first + 0.5, (first, last)
    assert max(x["objective/kl"] for x in lines) < 15.0
    for key in (
        "objective/kl",
        "objective/entropy",
        "objective/non_score_reward",
        "objective/rlhf_reward",
        "objective/scores",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/ratio",
        "val/num_eos_tokens",
        "lr",
        "episode",
        "gen_len",
        "reward_length_corr",
    ):
        assert key in lines[0], key
    assert lines[-1]["episode"] == 24 * 16 and lines[-1]["lr"] < lines[0]["lr"]
    assert math.isclose(lines[0]["val/ratio"], 1.0, abs_tol=0.05)
    assert elapsed < 60
    AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "trainer_config.json").read_text())["stage"] == "ppo"
    assert not (tmp_path / "pol.ckpt").exists()  # removed once the run completed


def test_early_stop_when_approx_kl_explodes(tmp_path, assets):
    lines = _lines(train_ppo(_cfg(assets, tmp_path / "es", max_steps=2, lr=0.05, approxkl_stop=1e-6)))
    assert lines[0]["policy/early_stop"] == 1.0
    assert lines[0]["policy/updates"] < 4


class Killed(Exception):
    pass


def test_resume_after_a_kill_equals_an_uninterrupted_run_and_same_seed_same_numbers(tmp_path, assets):
    full = train_ppo(_cfg(assets, tmp_path / "full", max_steps=4, kl_estimator="k3", adaptive_kl=True))
    again = train_ppo(_cfg(assets, tmp_path / "again", max_steps=4, kl_estimator="k3", adaptive_kl=True))
    assert _lines(full) == _lines(again)

    def die(line):
        if line["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_ppo(_cfg(assets, tmp_path / "cut", max_steps=4, kl_estimator="k3", adaptive_kl=True), on_metrics=die)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.ckpt" / "state.pt").is_file()
    resumed = train_ppo(
        _cfg(
            assets,
            tmp_path / "cut",
            max_steps=4,
            kl_estimator="k3",
            adaptive_kl=True,
            resume=str(tmp_path / "cut.ckpt"),
        )
    )
    assert _lines(resumed) == _lines(full)
    a = load_causal_lm(full).state_dict()
    b = load_causal_lm(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path, assets):
    from trainer.config import UsageError

    def die(line):
        if line["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_ppo(_cfg(assets, tmp_path / "x", max_steps=3), on_metrics=die)
    with pytest.raises(UsageError, match="different settings: lr"):
        train_ppo(_cfg(assets, tmp_path / "x", max_steps=3, lr=0.5, resume=str(tmp_path / "x.ckpt")))


def test_resume_after_sigkill_of_the_cli(tmp_path, assets):
    args = [
        "--policy",
        str(assets["lm"]),
        "--reward-model",
        str(assets["rm"]),
        "--prompts",
        str(assets["prompts"]),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "6",
        "--lr",
        "0.001",
        "--seed",
        "5",
        "--max-steps",
        "16",
        "--epochs",
        "4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "ppo", *args, "--out", str(tmp_path / "k")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = tmp_path / "k.ckpt" / "state.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), proc.stderr.read().decode()
    assert not (tmp_path / "k").exists()  # killed: no half-written output
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "ppo",
            *args,
            "--out",
            str(tmp_path / "k"),
            "--resume",
            str(tmp_path / "k.ckpt"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    # the uninterrupted reference runs in this process (same thread count as the children)
    uninterrupted = train_ppo(_cfg(assets, tmp_path / "u", max_steps=16, epochs=4))
    assert _lines(tmp_path / "k") == _lines(uninterrupted)


def test_loss_aggregation_is_invariant_to_microbatch_size(tmp_path, assets):
    a = _lines(train_ppo(_cfg(assets, tmp_path / "a", max_steps=2, num_minibatches=2)))
    b = _lines(train_ppo(_cfg(assets, tmp_path / "b", max_steps=2, num_minibatches=2, micro_batch_size=1)))
    for x, y in zip(a, b):
        for k in ("loss/policy_avg", "loss/value_avg", "objective/scores", "grad_norm", "policy/approxkl_avg"):
            assert math.isclose(x[k], y[k], rel_tol=1e-3, abs_tol=1e-6), (k, x[k], y[k])


def test_bad_prompts_exit_with_file_and_line(tmp_path, assets):
    from trainer.data import DataError

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": " na"}, {"text": "x"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2:"):
        train_ppo(_cfg(assets, tmp_path / "o", prompts=str(bad)))
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": " na" * 200}])  # too long prompts are skipped: none left
    with pytest.raises(DataError, match=r"long.jsonl:1: no prompt fits"):
        train_ppo(_cfg(assets, tmp_path / "o", prompts=str(long)))
    assert not (tmp_path / "o").exists()


def test_response_logprobs_do_not_depend_on_left_padding(assets):
    tok, policy, *_ = _models(assets)
    prompts = [tok(" na nb nc")["input_ids"], tok(" nd")["input_ids"]]
    response = tok(" ga gb")["input_ids"] + [tok.eos_token_id]
    ids, mask = pad_sequences([p + response for p in prompts], pad_token_id=tok.pad_token_id, side="left")
    P = ids.shape[1] - len(response)
    with torch.no_grad():
        batched = response_logprobs(policy, ids, mask, P, 0.7)
        for i, p in enumerate(prompts):
            alone = response_logprobs(
                policy,
                torch.tensor([p + response]),
                torch.ones(1, len(p) + len(response), dtype=torch.long),
                len(p),
                0.7,
            )
            assert torch.allclose(batched[i], alone[0], atol=1e-4)


def test_first_update_reusing_the_scoring_forward_equals_a_fresh_forward(assets):
    """Rollout.first_forward (the scoring pass's graph) gives the update a fresh forward would give."""
    import copy

    tok, policy, ref, reward, value = _models(assets)
    cfg = _cfg(assets, assets["dir"] / "unused", ppo_epochs=2, approxkl_stop=0.0)
    r = make_rollout(policy, ref, reward, value, tok, _batch(tok), 0, cfg, cfg.kl_coef, torch.device("cpu"))
    assert r.first_forward is not None and r.first_forward[0].requires_grad
    fresh = copy.copy(r)
    fresh.first_forward = None
    results = []
    # the kept graph belongs to these very models: the reusing run trains them, the fresh one trains copies
    for rollout, (p, v) in ((fresh, (copy.deepcopy(policy), copy.deepcopy(value))), (r, (policy, value))):
        params = list(p.parameters()) + list(v.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
        results.append((ppo_update(p, v, opt, params, rollout, 0, cfg, torch.device("cpu")), params))
    assert r.first_forward is None  # used once
    (new, p_new), (reused, p_reused) = results
    for k in reused:
        assert math.isclose(reused[k], new[k], rel_tol=1e-4, abs_tol=1e-6), (k, reused[k], new[k])
    for a, b in zip(p_reused, p_new):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # several minibatches: the first one is not the whole batch, so no graph is kept
    cfg2 = _cfg(assets, assets["dir"] / "unused", num_minibatches=2)
    assert (
        make_rollout(policy, ref, reward, value, tok, _batch(tok), 0, cfg2, 0.05, torch.device("cpu")).first_forward
        is None
    )


def test_a_likelihood_feature_reward_model_scores_left_padded_rollouts_as_rows_alone(tmp_path, assets):
    from trainer.reward_scoring import load_reward_scorer

    rm = train_reward(
        RewardConfig(
            model=str(assets["lm"]),
            data=str(assets["dir"] / "pref.jsonl"),
            out=str(tmp_path / "rm"),
            lr=3e-3,
            device="cpu",
            max_steps=4,
            likelihood_model=str(assets["lm"]),
            likelihood_lr=0.5,
        )
    )
    tok, policy, ref, _, value = _models(assets)
    reward = load_reward_scorer(rm, tok).requires_grad_(False)
    assert reward.likelihood is not None and float(reward.likelihood.weight) != 0.0
    cfg = _cfg(assets, tmp_path / "unused", max_new_tokens=4)
    batch = _batch(tok)  # prompts of 2 and 1 tokens: left-padded to 2
    r = make_rollout(policy, ref, reward, value, tok, batch, 0, cfg, 0.1, torch.device("cpu"))
    rows = [prompt + r.ids[i, r.prompt_width :][r.response_mask[i]].tolist() for i, (_, prompt) in enumerate(batch)]
    ids, mask = pad_sequences(rows, pad_token_id=tok.pad_token_id, side="right")
    with torch.no_grad():
        alone = reward(ids, mask, torch.tensor([len(prompt) for _, prompt in batch]))
    assert torch.allclose(r.scores, penalise_missing_eos(alone, r.finished, cfg.missing_eos_penalty), atol=1e-4)
    # and a PPO run against it completes
    out = train_ppo(_cfg(assets, tmp_path / "ppo", reward_model=str(rm), max_steps=2))
    assert all(math.isfinite(x["objective/scores"]) for x in _lines(out) if "objective/scores" in x)


def test_gradient_checkpointing_keeps_the_numbers_and_bf16_weights_train(tmp_path, assets):
    # two trained models checkpointed, the sampler's KV cache untouched (it runs under no_grad): the same run
    plain = _lines(train_ppo(_cfg(assets, tmp_path / "plain", max_steps=2)))
    checkpointed = _lines(train_ppo(_cfg(assets, tmp_path / "gc", max_steps=2, gradient_checkpointing=True)))
    for x, y in zip(plain, checkpointed, strict=True):
        assert x["gen_len"] == y["gen_len"]
        for key in ("objective/scores", "loss/policy_avg", "loss/value_avg", "objective/kl"):
            assert math.isclose(x[key], y[key], rel_tol=1e-3, abs_tol=1e-5), (key, x[key], y[key])
    # --precision bf16: all four models in bf16 weights, the numbers finite, the policy saved in bf16
    out = train_ppo(_cfg(assets, tmp_path / "bf16", max_steps=2, precision="bf16"))
    assert all(math.isfinite(line["loss/policy_avg"]) and math.isfinite(line["objective/kl"]) for line in _lines(out))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
