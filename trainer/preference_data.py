"""Reading the preference exports (`trl`, `trl-conversational`, `rankings`, `kto`) into comparison groups.

The format is detected from the keys of each line (`trl` and `rankings` lines may share a file, so pairwise
choices and rankings train together with each ranking kept whole; `kto` and `trl-conversational` files hold one
format):
    trl                 {"prompt"?, "chosen": str, "rejected": str, "margin"?: number|null, "tie"?: bool,
                         "weight"?: number}
    trl-conversational  the same with messages lists ({"role", "content"})
    rankings            {"prompt", "completions": [best, ..., worst], "weight"?: number}
    kto                 {"prompt", "completion", "label": bool, "weight"?: number}

`weight` (default 1.0, at least 0) is how much a line counts in the loss: a weighted mean over comparison groups
(the service writes the annotator's reliability there, app/services/annotator_reliability.py). A kto group, made of
several lines, takes the mean of their weights.

Every format becomes `PreferenceGroup`s: the responses of one prompt, each tokenized once, and the
comparisons between them. A ranking of K responses is one group with all K(K-1)/2 pairs (InstructGPT
§3.5: the K responses are encoded once and the pairs share a batch element); good/bad labels become
every (good, bad) pair within a prompt. Text follows TRL: a string prompt and its completion are seen as
`prompt + completion` exactly, an EOS is appended (the score is read there), chat messages go through the
tokenizer's chat template. `collate_groups` turns a batch of groups into padded tensors and pair indices: the one
batch layout of the reward model and DPO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.config import UsageError
from trainer.context_fit import warn_skipped
from trainer.data import DataError, read_jsonl
from trainer.masks import pad_sequences
from trainer.prompt_data import chat_text, encode_text


@dataclass
class Pair:
    better: int  # index into PreferenceGroup.sequences
    worse: int
    margin: float = 0.0  # required score gap (TRL's `margin` column); 0 when absent
    target: float = 1.0  # P(better beats worse): 1.0, or 0.5 for a tie kept as a soft target


@dataclass
class PreferenceGroup:
    source: str  # "file:line" of the (first) line it came from
    sequences: list[list[int]]  # prompt + response + EOS token ids, one per response
    prompt_lengths: list[int]  # tokens of each sequence that belong to the prompt
    pairs: list[Pair] = field(default_factory=list)
    weight: float = 1.0  # the group's share of the loss, relative to the others (the line's `weight`)


@dataclass
class PreferenceSet:
    format: str
    groups: list[PreferenceGroup]
    n_lines: int
    max_length: int  # longest sequence kept, in tokens
    skipped_ties: int = 0  # tie pairs left out (ties="exclude")
    skipped_too_long: int = 0  # groups with a sequence longer than max_length (trainer.context_fit; TRL drops them too)
    skipped_unpaired: int = 0  # kto prompts with only good or only bad labels
    skipped_lines: list[int] = field(default_factory=list)  # first line of each group skipped as too long

    @property
    def n_pairs(self) -> int:
        return sum(len(g.pairs) for g in self.groups)


@dataclass
class GroupBatch:
    input_ids: torch.Tensor  # [S, T] every response of every group, right-padded
    attention_mask: torch.Tensor  # [S, T]
    prompt_lengths: torch.Tensor  # [S]
    better: torch.Tensor  # [N] row of the preferred response of each pair
    worse: torch.Tensor  # [N]
    margin: torch.Tensor  # [N]
    target: torch.Tensor  # [N]
    pair_weight: torch.Tensor  # [N] group weight / (pairs in its group): each group counts once, as in InstructGPT
    n_groups: int
    identical: torch.Tensor  # [N] bool: the pair's two responses are the same tokens


def collate_groups(groups: list[PreferenceGroup], pad_token_id: int) -> GroupBatch:
    """One forward's batch: every response of every group once (a ranking's K responses are encoded once and its
    pairs index into them)."""
    seqs, prompt_lengths, better, worse, margin, target, weight, identical = [], [], [], [], [], [], [], []
    for g in groups:
        base = len(seqs)
        seqs.extend(g.sequences)
        prompt_lengths.extend(g.prompt_lengths)
        for p in g.pairs:
            better.append(base + p.better)
            worse.append(base + p.worse)
            margin.append(p.margin)
            target.append(p.target)
            weight.append(g.weight / len(g.pairs))
            identical.append(g.sequences[p.better] == g.sequences[p.worse])
    ids, mask = pad_sequences(seqs, pad_token_id=pad_token_id, side="right")
    t = lambda v, dt=torch.float32: torch.tensor(v, dtype=dt)  # noqa: E731
    return GroupBatch(
        ids,
        mask,
        t(prompt_lengths, torch.long),
        t(better, torch.long),
        t(worse, torch.long),
        t(margin),
        t(target),
        t(weight),
        len(groups),
        t(identical, torch.bool),
    )


def total_weight(groups: list[PreferenceGroup]) -> float:
    """The sum of the groups' weights: what a batch's loss is divided by, so it is the weighted mean over groups
    (with every weight 1.0, the plain mean over groups)."""
    return sum(g.weight for g in groups)


MIXABLE = {"trl", "rankings"}  # formats whose lines may share one file


def detect_format(obj: dict, path: str | Path, line: int) -> str:
    if "completions" in obj:
        return "rankings"
    if "completion" in obj and "label" in obj:
        return "kto"
    if "chosen" in obj and "rejected" in obj:
        return "trl-conversational" if isinstance(obj["chosen"], list) else "trl"
    raise DataError(
        path,
        line,
        "unknown preference format: expected keys chosen/rejected (trl), "
        "completions (rankings) or completion/label (kto), got " + ", ".join(sorted(obj)),
    )


class _Encoder:
    """prompt (+ completion) -> token ids, following TRL's text conventions."""

    def __init__(self, tokenizer, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length
        self.eos = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        # BOS exactly once, whether the chat template wrote it or the tokenizer adds it (prompt_data.encode_text)
        return encode_text(self.tok, text)["input_ids"]

    def prompt_text(self, prompt, chat: bool) -> str:
        if not chat:
            return prompt
        if not prompt:
            return ""
        return chat_text(self.tok, prompt, add_generation_prompt=True)

    def encode(self, prompt, completion, chat: bool, path, line) -> tuple[list[int], int]:
        """(ids of prompt + completion + EOS, number of prompt tokens)."""
        p_text = self.prompt_text(prompt, chat)
        if chat:
            full = chat_text(self.tok, list(prompt or []) + list(completion), add_generation_prompt=False)
            if not full.startswith(p_text):
                raise DataError(path, line, "chat template output does not start with the rendered prompt")
        else:
            full = prompt + completion
        ids = self._ids(full)
        if not ids or ids[-1] != self.eos:
            ids = ids + [self.eos]
        n_prompt = len(self._ids(p_text)) if p_text else 0
        return ids, min(n_prompt, len(ids) - 1)


def encode_response(tok, prompt: str | list[dict], response: str) -> tuple[list[int], int]:
    """(ids of prompt + response + EOS, prompt tokens) as reward training encodes them: a chat prompt (messages) with
    the response as the assistant's turn through the tokenizer's own template (which may write a space or trim, as
    Mistral's and Llama 3's do), a text prompt as prompt + response, BOS once either way."""
    chat = isinstance(prompt, list)
    completion = [{"role": "assistant", "content": response}] if chat else response
    return _Encoder(tok, 0).encode(prompt, completion, chat, "<scored>", 0)


def _check_messages(value, key: str, path, line) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(path, line, f'"{key}" must be a non-empty list of messages')
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(path, line, f'"{key}"[{i}] must be an object with string "role" and "content"')
    return value


def _prompt(obj: dict, chat: bool, path, line, required: bool):
    if "prompt" not in obj or obj["prompt"] is None:
        if required:
            raise DataError(path, line, 'missing "prompt"')
        return [] if chat else ""
    if chat:
        return _check_messages(obj["prompt"], "prompt", path, line)
    if not isinstance(obj["prompt"], str):
        raise DataError(path, line, f'"prompt" must be a string, got {type(obj["prompt"]).__name__}')
    return obj["prompt"]


def _response(value, key: str, chat: bool, path, line):
    if chat:
        return _check_messages(value, key, path, line)
    if not isinstance(value, str):
        raise DataError(path, line, f'"{key}" must be a string, got {type(value).__name__}')
    return value


def _weight(obj: dict, path, line) -> float:
    weight = obj.get("weight")
    if weight is None:
        return 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
        raise DataError(path, line, f'"weight" must be a finite number >= 0, got {weight!r}')
    return float(weight)


def _is_chat(value) -> bool:
    return isinstance(value, list)


def load_preferences(path: str | Path, tokenizer, *, ties: str = "exclude", max_length: int = 1024) -> PreferenceSet:
    """Read a preference export; bad lines raise DataError naming file:line. Groups with a sequence longer than
    max_length (give trainer.context_fit.sequence_limit: never more than the model's context) are skipped, counted.

    ties: "exclude" drops tie pairs; "half" keeps them with target 0.5 (no margin).
    """
    if ties not in ("exclude", "half"):
        raise UsageError(f"--ties must be exclude|half, got {ties!r}")
    enc = _Encoder(tokenizer, max_length)
    lines = list(read_jsonl(path))
    if not lines:
        raise DataError(path, 1, "no preference data")
    fmt = detect_format(lines[0][1], path, lines[0][0])
    result = PreferenceSet(format=fmt, groups=[], n_lines=len(lines), max_length=max_length)
    if fmt == "kto":
        _read_kto(lines, enc, result, path)
    else:
        seen = set()
        for line, obj in lines:
            line_fmt = detect_format(obj, path, line)
            if line_fmt != fmt and {line_fmt, fmt} != MIXABLE:
                raise DataError(path, line, f"line is not in the {fmt} format of the first line")
            seen.add(line_fmt)
            group = _read_ranked(line_fmt, obj, enc, result, path, line, ties)
            if group is not None:
                _keep(result, group)
        result.format = "+".join(sorted(seen))
    warn_skipped(path, "comparison group(s)", result.skipped_lines, max_length)
    if not result.groups:
        raise DataError(path, lines[-1][0], "no usable comparison in the file (all ties, unpaired or too long)")
    return result


def _keep(result: PreferenceSet, group: PreferenceGroup) -> None:
    if max(len(s) for s in group.sequences) > result.max_length:  # the whole group goes: a ranking stays whole
        result.skipped_too_long += 1
        result.skipped_lines.append(int(group.source.rsplit(":", 1)[1]))
        return
    result.groups.append(group)


def _read_ranked(fmt, obj, enc: _Encoder, result, path, line, ties) -> PreferenceGroup | None:
    src = f"{path}:{line}"
    if fmt == "rankings":
        comps = obj["completions"]
        if not isinstance(comps, list) or len(comps) < 2:
            raise DataError(path, line, '"completions" must be a list of at least 2 responses, best first')
        chat = _is_chat(comps[0])
        prompt = _prompt(obj, chat, path, line, required=True)
        responses = [_response(c, f"completions[{i}]", chat, path, line) for i, c in enumerate(comps)]
        encoded = [enc.encode(prompt, r, chat, path, line) for r in responses]
        K = len(responses)
        pairs = [Pair(i, j) for i in range(K) for j in range(i + 1, K)]
    else:
        chat = fmt == "trl-conversational"
        prompt = _prompt(obj, chat, path, line, required=False)
        chosen = _response(obj["chosen"], "chosen", chat, path, line)
        rejected = _response(obj["rejected"], "rejected", chat, path, line)
        margin = obj.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise DataError(path, line, f'"margin" must be a number or null, got {margin!r}')
        tie = obj.get("tie", False)
        if tie is None:
            tie = False
        if not isinstance(tie, bool):
            raise DataError(path, line, f'"tie" must be true or false, got {tie!r}')
        if tie and ties == "exclude":
            result.skipped_ties += 1
            return None
        encoded = [enc.encode(prompt, chosen, chat, path, line), enc.encode(prompt, rejected, chat, path, line)]
        pairs = [Pair(0, 1, 0.0, 0.5) if tie else Pair(0, 1, float(margin or 0.0), 1.0)]
    return PreferenceGroup(src, [e[0] for e in encoded], [e[1] for e in encoded], pairs, _weight(obj, path, line))


def _read_kto(lines, enc: _Encoder, result: PreferenceSet, path) -> None:
    by_prompt: dict[str, dict] = {}
    for line, obj in lines:
        if detect_format(obj, path, line) != "kto":
            raise DataError(path, line, "line is not in the kto format of the first line")
        chat = _is_chat(obj["completion"])
        prompt = _prompt(obj, chat, path, line, required=True)
        completion = _response(obj["completion"], "completion", chat, path, line)
        label = obj["label"]
        if not isinstance(label, bool):
            raise DataError(path, line, f'"label" must be true or false, got {label!r}')
        key = json.dumps(prompt, sort_keys=True)
        entry = by_prompt.setdefault(key, {"line": line, "seqs": [], "plens": [], "good": [], "bad": [], "w": []})
        entry["w"].append(_weight(obj, path, line))
        ids, n_prompt = enc.encode(prompt, completion, chat, path, line)
        entry["seqs"].append(ids)
        entry["plens"].append(n_prompt)
        (entry["good"] if label else entry["bad"]).append(len(entry["seqs"]) - 1)
    for entry in by_prompt.values():  # insertion order = first appearance in the file: deterministic
        if not entry["good"] or not entry["bad"]:
            result.skipped_unpaired += 1
            continue
        pairs = [Pair(g, b) for g in entry["good"] for b in entry["bad"]]
        weight = sum(entry["w"]) / len(entry["w"])
        _keep(result, PreferenceGroup(f"{path}:{entry['line']}", entry["seqs"], entry["plens"], pairs, weight))
