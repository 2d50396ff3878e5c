import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import run_metrics
from trainer.data import DataError
from trainer.sft import IGNORE, SftConfig, collate, encode_messages, encode_prompt_completion, train_sft


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def learned_text(tok, ids, labels):
    return tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])


def test_prompt_completion_is_prompt_plus_completion_with_loss_on_completion_only(tok):
    prompt, completion = "question: what is 3 plus 4? answer:", " 7"
    ids, labels = encode_prompt_completion(tok, prompt, completion)
    assert tok.decode(ids) == prompt + completion + tok.eos_token  # exactly, no separator added
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
    n_prompt = len(tok(prompt)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]  # every completion token (and EOS) is learned
    assert learned_text(tok, ids, labels) == completion + tok.eos_token


def test_chat_loss_covers_assistant_turns_only(tok):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is 1 plus 2?"},
        {"role": "assistant", "content": "3"},
        {"role": "user", "content": "and 2 plus 2?"},
        {"role": "assistant", "content": "it is 4"},
    ]
    ids, labels = encode_messages(tok, messages)
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    assert learned_text(tok, ids, labels) == f"3{tok.eos_token}it is 4{tok.eos_token}"
    # each learned run is exactly one assistant answer and its EOS
    runs, cur = [], []
    for t, lab in zip(ids, labels):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur)), cur.clear()
    runs.append(tok.decode(cur))
    assert runs == [f"3{tok.eos_token}", f"it is 4{tok.eos_token}"]


def test_conversational_prompt_completion_learns_completion_turns_only(tok):
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    completion = [{"role": "assistant", "content": "see you"}]
    ids, labels = encode_messages(tok, prompt + completion, learn_from=len(prompt))
    assert learned_text(tok, ids, labels) == f"see you{tok.eos_token}"


def test_collate_pads_right_and_ignores_padding(tok):
    a = encode_prompt_completion(tok, "q:", " a")
    b = encode_prompt_completion(tok, "question: long one here", " longer answer")
    batch = collate([a, b], tok.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    n = len(a[0])
    assert batch["input_ids"][0, n:].eq(tok.pad_token_id).all() and batch["labels"][0, n:].eq(IGNORE).all()
    assert batch["attention_mask"][0].sum() == n and batch["attention_mask"][1].all()


def write_sft_data(path, n=24):
    with open(path, "w") as f:
        for a in range(n):
            f.write(json.dumps({"prompt": f"question: what is {a} plus 1? answer:", "completion": f" {a + 1}"}) + "\n")
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"what is {a} plus 2?"},
                            {"role": "assistant", "content": str(a + 2)},
                        ]
                    }
                )
                + "\n"
            )
    return path


def sft_config(model, data, out, **kw):
    base = dict(model=str(model), data=str(data), out=str(out), lr=3e-3, batch_size=8, epochs=3, device="cpu", seed=1)
    return SftConfig(**{**base, **kw})


def test_sft_trains_on_completions_reproducibly(tmp_path, tiny_lm_dir):
    data = write_sft_data(tmp_path / "sft.jsonl")
    a = train_sft(sft_config(tiny_lm_dir, data, tmp_path / "a"))
    b = train_sft(sft_config(tiny_lm_dir, data, tmp_path / "b"))
    metrics = run_metrics(a)
    assert metrics == run_metrics(b)
    assert len(metrics) == 18 and metrics[-1]["step"] == metrics[-1]["total_steps"] == 18
    assert sum(m["loss"] for m in metrics[-3:]) / 3 < sum(m["loss"] for m in metrics[:3]) / 3 - 0.5
    assert json.loads((a / "trainer_config.json").read_text())["stage"] == "sft"
    AutoModelForCausalLM.from_pretrained(a)
    AutoTokenizer.from_pretrained(a)


def test_loss_equals_mean_ce_over_completion_tokens(tok, tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    examples = [
        encode_prompt_completion(tok, "question: what is 2 plus 2? answer:", " 4"),
        encode_messages(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]),
    ]
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].log_softmax(-1)  # position t-1 predicts token t
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    manual = -logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)[keep].mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a"}', 'expected {"prompt", "completion"}'),
        ('{"prompt": "a", "completion": 3}', "both be strings"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "role must be"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, tiny_lm_dir, line, message):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n' + line + "\n")
    with pytest.raises(DataError) as err:
        train_sft(sft_config(tiny_lm_dir, data, tmp_path / "out"))
    assert str(err.value).startswith(f"{data}:2:") and message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_memory_switches_train_the_same_model(tmp_path, tiny_lm_dir):
    # --gradient-checkpointing recomputes the same function: the same losses; --precision bf16 keeps bf16 weights
    data = write_sft_data(tmp_path / "sft.jsonl")
    a = run_metrics(train_sft(sft_config(tiny_lm_dir, data, tmp_path / "a", epochs=1)))
    cfg = sft_config(tiny_lm_dir, data, tmp_path / "gc", epochs=1, gradient_checkpointing=True)
    gc = run_metrics(train_sft(cfg))
    for x, y in zip(a, gc, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
    bf16 = train_sft(sft_config(tiny_lm_dir, data, tmp_path / "bf16", epochs=1, precision="bf16"))
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    assert run_metrics(bf16)[0]["loss"] == pytest.approx(a[0]["loss"], rel=0.05)
