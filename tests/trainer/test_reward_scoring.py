import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.trainer.architectures import ARCHITECTURES, GOOD, QUESTIONS, build_model, user, write_conversations
from trainer.judges import load_judge
from trainer.reward_model import RewardConfig, train_reward
from trainer.reward_scoring import load_reward_scorer, ordered_right
from trainer.runtime import load_tokenizer


def test_identical_responses_count_half():
    credit = ordered_right(torch.tensor([1.0, 0.0, -2.0, 3.0]), torch.tensor([False, False, False, True]))
    assert credit.tolist() == [1.0, 0.0, 0.0, 0.5]


def _card_code(reward_dir: Path) -> str:
    card = (reward_dir / "README.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


@pytest.mark.parametrize("name, likelihood", [("llama", True), ("qwen2", False)])
def test_a_moved_data_dir_still_scores_and_the_card_scores_with_transformers_alone(
    tmp_path, monkeypatch, name, likelihood
):
    """A round's reward model and its likelihood model live in the data dir; whoever moves the data dir keeps a working
    reward model, and its README computes the same reward with transformers alone."""
    arch = ARCHITECTURES[name]
    data_dir = tmp_path / "data"
    sft = build_model(arch, data_dir / "models" / "sft")
    prefs = write_conversations(data_dir / "snapshot")["prefs"]
    flags = {"likelihood_model": str(sft)} if likelihood else {}
    train_reward(
        RewardConfig(
            model=str(sft),
            data=str(prefs),
            out=str(data_dir / "rounds" / "1" / "reward"),
            max_steps=1,
            batch_size=4,
            device="cpu",
            **flags,
        )
    )
    moved = shutil.move(data_dir, tmp_path / "elsewhere" / "data")
    reward_dir = Path(moved) / "rounds" / "1" / "reward"
    prompts, answers = [user(q) for q in QUESTIONS[:2]], GOOD[:2]
    tok = load_tokenizer(reward_dir)
    scorer = load_reward_scorer(reward_dir, tok)
    assert (scorer.likelihood is not None) == likelihood
    judged = load_judge(f"rm:{reward_dir}", "cpu", "fp32")(["", ""], answers, prompts)

    code = _card_code(reward_dir)
    monkeypatch.chdir(reward_dir)  # the card's code reads REWARD_DIR = "." (this directory)
    card: dict = {}
    exec(compile(code, "README.md", "exec"), card)  # noqa: S102 - the model card's own code, as a reader would run it
    assert [card["score"](p, a) for p, a in zip(prompts, answers)] == pytest.approx(judged, abs=1e-4)
    heads = [card["head_score"](p, a) for p, a in zip(prompts, answers)]
    card_text = (reward_dir / "README.md").read_text(encoding="utf-8")
    if likelihood:
        assert heads != pytest.approx(judged, abs=1e-4)  # the head alone leaves the likelihood term out
        assert "only part of the reward" in card_text and "../../../models/sft" in card_text
    else:
        assert heads == pytest.approx(judged, abs=1e-4) and "is the whole score" in card_text
