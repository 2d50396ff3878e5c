import json

import pytest

from tests.factories import build_word_tokenizer, write_jsonl
from trainer.data import DataError
from trainer.preference_data import load_preferences


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_word_tokenizer(tmp_path_factory.mktemp("tok"))


def test_trl_format_with_margin_and_ties(tmp_path, tok):
    rows = [
        {"prompt": " na nb", "chosen": " ga gb", "rejected": " ba bb", "margin": 2.0, "tie": False},
        {"prompt": " na nc", "chosen": " gc", "rejected": " bc", "margin": None, "tie": True},
        {"prompt": " na nd", "chosen": " gd", "rejected": " bd", "margin": None, "tie": False},
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    ex = load_preferences(p, tok, ties="exclude")
    assert ex.format == "trl"
    assert len(ex.groups) == 2 and ex.skipped_ties == 1
    g = ex.groups[0]
    # prompt + completion exactly, then EOS; the prompt is a prefix of both sequences
    assert g.sequences[0] == tok(" na nb ga gb")["input_ids"] + [tok.eos_token_id]
    assert g.sequences[0][: g.prompt_lengths[0]] == tok(" na nb")["input_ids"]
    assert (g.pairs[0].better, g.pairs[0].worse, g.pairs[0].margin, g.pairs[0].target) == (0, 1, 2.0, 1.0)
    assert ex.groups[1].pairs[0].margin == 0.0
    half = load_preferences(p, tok, ties="half")
    assert len(half.groups) == 3 and half.groups[1].pairs[0].target == 0.5


def test_rankings_become_all_pairs_encoded_once(tmp_path, tok):
    p = write_jsonl(tmp_path / "r.jsonl", [{"prompt": " na", "completions": [" ga", " nb", " ba", " bb"]}])
    s = load_preferences(p, tok)
    assert s.format == "rankings"
    (g,) = s.groups
    assert len(g.sequences) == 4  # each response once
    assert [(q.better, q.worse) for q in g.pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_kto_labels_pair_within_a_prompt(tmp_path, tok):
    rows = [
        {"prompt": " na", "completion": " ga", "label": True},
        {"prompt": " nb", "completion": " gb", "label": True},
        {"prompt": " na", "completion": " ba", "label": False},
        {"prompt": " na", "completion": " gc", "label": True},
    ]
    s = load_preferences(write_jsonl(tmp_path / "k.jsonl", rows), tok)
    assert s.format == "kto"
    assert len(s.groups) == 1 and s.skipped_unpaired == 1  # " nb" has no bad completion
    (g,) = s.groups
    assert sorted((q.better, q.worse) for q in g.pairs) == [(0, 1), (2, 1)]


def test_conversational_goes_through_the_chat_template(tmp_path, tok):
    row = {
        "prompt": [{"role": "user", "content": " na"}],
        "chosen": [{"role": "assistant", "content": " ga"}],
        "rejected": [{"role": "assistant", "content": " ba"}],
    }
    s = load_preferences(write_jsonl(tmp_path / "c.jsonl", [row]), tok)
    assert s.format == "trl-conversational"
    text = tok.decode(s.groups[0].sequences[0])
    assert text == "<|user|> na<|assistant|> ga<|endoftext|>"  # template's EOS kept, no second EOS


def test_bad_lines_name_file_and_line(tmp_path, tok):
    p = tmp_path / "bad.jsonl"
    p.write_text(
        json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"})
        + "\n"
        + json.dumps({"prompt": "a", "chosen": 3, "rejected": "c"})
        + "\n"
    )
    with pytest.raises(DataError) as e:
        load_preferences(p, tok)
    assert str(e.value).startswith(f"{p}:2:")
    q = write_jsonl(tmp_path / "unknown.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match=r"unknown.jsonl:1: unknown preference format"):
        load_preferences(q, tok)
    r = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c", "margin": "x"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: \"margin\""):
        load_preferences(r, tok)


def test_trl_and_rankings_lines_share_a_file(tmp_path, tok):
    """A round trains on pairwise choices (trl lines) and rankings (kept whole) from one file."""
    rows = [{"prompt": "q", "chosen": " a", "rejected": " b"}, {"prompt": "q", "completions": [" a", " b", " c"]}]
    s = load_preferences(write_jsonl(tmp_path / "mix.jsonl", rows), tok)
    assert s.format == "rankings+trl"
    assert [len(g.sequences) for g in s.groups] == [2, 3]  # the ranking's 3 responses encoded once
    assert s.n_pairs == 1 + 3
    kto_then_trl = [
        {"prompt": "q", "completion": " a", "label": True},
        {"prompt": "q", "chosen": " a", "rejected": " b"},
    ]
    with pytest.raises(DataError):
        load_preferences(write_jsonl(tmp_path / "bad-mix.jsonl", kto_then_trl), tok)
    conv_then_rank = [
        {"chosen": [{"role": "assistant", "content": " a"}], "rejected": [{"role": "assistant", "content": " b"}]},
        {"prompt": "q", "completions": [" a", " b"]},
    ]
    with pytest.raises(DataError, match=r"bad-mix2.jsonl:2: line is not in the trl-conversational format"):
        load_preferences(write_jsonl(tmp_path / "bad-mix2.jsonl", conv_then_rank), tok)


def test_a_line_weight_reaches_its_group_and_the_pair_weights(tmp_path, tok):
    from trainer.preference_data import collate_groups, total_weight

    rows = [
        {"prompt": "q", "chosen": " a", "rejected": " b", "weight": 0.25},
        {"prompt": "q", "completions": [" a", " b", " c"], "weight": 2},
        {"prompt": "q", "chosen": " c", "rejected": " a"},
    ]
    s = load_preferences(write_jsonl(tmp_path / "w.jsonl", rows), tok)
    assert [g.weight for g in s.groups] == [0.25, 2.0, 1.0]  # absent: 1.0
    assert total_weight(s.groups) == 3.25
    batch = collate_groups(s.groups, tok.pad_token_id)
    # each group's weight spread over its pairs, so a ranking counts as one group however many pairs it has
    assert batch.pair_weight.tolist() == pytest.approx([0.25, 2 / 3, 2 / 3, 2 / 3, 1.0])
    kto = [
        {"prompt": "q", "completion": " a", "label": True, "weight": 1.0},
        {"prompt": "q", "completion": " b", "label": False, "weight": 0.0},
    ]
    assert load_preferences(write_jsonl(tmp_path / "k.jsonl", kto), tok).groups[0].weight == 0.5
    for bad in (-1, "1", True, None):
        row = {"prompt": "q", "chosen": " a", "rejected": " b", "weight": bad}
        path = write_jsonl(tmp_path / "bad-w.jsonl", [{"prompt": "q", "chosen": " a", "rejected": " b"}, row])
        if bad is None:  # null is "no weight", as for margin
            assert load_preferences(path, tok).groups[1].weight == 1.0
            continue
        with pytest.raises(DataError, match=r"bad-w.jsonl:2: \"weight\" must be a finite number >= 0"):
            load_preferences(path, tok)
