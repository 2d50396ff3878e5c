import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerFast

from tests.factories import tiny_gpt2_config
from trainer.config import UsageError
from trainer.generate import GenerateConfig, run_generate
from trainer.runtime import autocast, load_causal_lm, load_tokenizer, resolve_device
from trainer.sft import SftConfig, train_sft


@pytest.fixture(scope="module")
def foreign_lm_dir(tmp_path_factory, tiny_corpus_file):
    """A user's own model: GPT-2 style, tokenizer with EOS only (no PAD), as many HF models ship."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train(
        [str(tiny_corpus_file)],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(tok, n_positions=64))  # no pad_token_id: the tokenizer has none
    out = tmp_path_factory.mktemp("foreign") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_tokenizer_without_pad_pads_with_eos_and_nothing_grows(foreign_lm_dir):
    size = len(AutoTokenizer.from_pretrained(foreign_lm_dir))
    assert AutoTokenizer.from_pretrained(foreign_lm_dir).pad_token is None
    tok = load_tokenizer(foreign_lm_dir)
    assert tok.pad_token_id == tok.eos_token_id and len(tok) == size
    model = load_causal_lm(foreign_lm_dir, "cpu", tokenizer=tok)
    assert model.get_input_embeddings().weight.shape[0] == size
    assert model.config.pad_token_id == tok.pad_token_id and not model.training
    assert load_causal_lm(foreign_lm_dir, "cpu", train=True).training


def test_sft_and_generate_work_on_a_users_own_model(tmp_path, foreign_lm_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"the cat {i}", "completion": " sat."}) + "\n" for i in range(8)))
    out = train_sft(
        SftConfig(
            model=str(foreign_lm_dir),
            data=str(data),
            out=str(tmp_path / "sft"),
            max_steps=2,
            batch_size=4,
            device="cpu",
        )
    )
    tok, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    size = len(AutoTokenizer.from_pretrained(foreign_lm_dir))
    assert tok.pad_token == tok.eos_token and model.get_input_embeddings().weight.shape[0] == len(tok) == size
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt_id": "a", "prompt": "the cat"}\n')
    run_generate(
        GenerateConfig(
            model=str(out),
            prompts=str(prompts),
            out=str(tmp_path / "g.jsonl"),
            num_samples=2,
            max_new_tokens=5,
            device="cpu",
        )
    )
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in rows] == [0, 1] and all(tok.eos_token not in r["text"] for r in rows)


def test_devices_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    x = torch.ones(2, 2)
    with autocast(cpu, "auto"):
        assert (x @ x).dtype == torch.float32  # auto = fp32 on CPU
    with autocast(cpu, "fp32"):
        assert (x @ x).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (x @ x).dtype == torch.bfloat16


def test_missing_model_dir_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a model directory"):
        load_causal_lm(tmp_path / "nope")
    with pytest.raises(UsageError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path / "nope")


def test_total_steps_and_linear_decay():
    from trainer.runtime import linear_decay, total_steps_for

    assert total_steps_for(epochs=3, batches_per_epoch=4, max_steps=0) == 12
    assert total_steps_for(epochs=3, batches_per_epoch=4, max_steps=5) == 5
    assert total_steps_for(epochs=1, batches_per_epoch=4, max_steps=50) == 50  # replaces the epochs, as in HF's Trainer
    p = torch.nn.Parameter(torch.zeros(1))
    for enabled, expected in ((True, [1.0, 0.75, 0.5, 0.25]), (False, [1.0] * 4)):
        opt = torch.optim.SGD([p], lr=1.0)
        sched = linear_decay(opt, 4, enabled=enabled)
        lrs = []
        for _ in range(4):
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        assert lrs == expected
