"""One line builder per export format (every line of a format has the same keys with the same types, so
`datasets` builds one table):

    trl                 prompt, chosen, rejected (strings), margin (float), annotation_id [, tie (bool)]
    trl-conversational  the same with prompt a messages list and chosen/rejected [{"role": "assistant", ...}]
    kto                 prompt, completion, label (bool: good is true), annotation_id
    rankings            prompt, completions (best first), annotation_id
    sft                 prompt, completion, source ("rewrite" | "good"), annotation_id
    rich                one line per annotation (or final label: `adjudicated`) with everything (`rich_line`); CSV too

Where the pairs come from (`trl`): a pairwise choice gives (chosen, the other response); a ranking of K gives
all K(K-1)/2 pairs, best-first order (InstructGPT). Ties and both-bad are left out unless `include_ties`, which
adds a bool `tie` on every line; a tie line lists the two responses in generation-id order. Margins: margins.py.
A rewrite is a preference too (`rewrite_pairs`): the rewrite over the response it rewrote and over every response
rated bad, margin 0, after the annotation's other pairs (`rewrites`: include, the default; exclude; or only those).
`rich` lists every pair an annotation gives with its source (`preference_pairs`: choice, ranking or rewrite).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from app.services.exports.margins import margin_for, own_margin
from app.services.exports.query import PAIRWISE, RANKING, RATING, decode_json

FORMATS = ("trl", "trl-conversational", "kto", "rankings", "sft", "rich")
TRL_FORMATS = ("trl", "trl-conversational")
REWRITE_OPTIONS = ("include", "exclude", "only")
# A rewrite's pairs claim no strength: the rewrite may be a small edit of the response it rewrote.
REWRITE_MARGIN = 0.0

_encode = json.JSONEncoder(ensure_ascii=False).encode
_encode_str = json.encoder.encode_basestring  # what _encode writes for a str (ensure_ascii=False)


def jsonl_line(line: dict[str, Any]) -> str:
    """One line of a JSONL export, newline included."""
    return _encode(line) + "\n"


def prompt_string(text: str | None, messages: list[dict[str, str]] | None) -> str:
    if messages is None:
        return text or ""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def prompt_messages(text: str | None, messages: list[dict[str, str]] | None) -> list[dict[str, str]]:
    if messages is None:
        return [{"role": "user", "content": text or ""}]
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ---- trl, trl-conversational -------------------------------------------------------------------------------------


def trl_line(
    prompt: Any,
    better: str,
    worse: str,
    margin: float,
    annotation_id: int,
    tie: bool,
    *,
    conversational: bool,
    include_ties: bool,
) -> dict[str, Any]:
    """The one `trl` / `trl-conversational` line (`prompt` already in the format's shape)."""
    if conversational:
        line = {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": better}],
            "rejected": [{"role": "assistant", "content": worse}],
        }
    else:
        line = {"prompt": prompt, "chosen": better, "rejected": worse}
    line["margin"] = margin
    line["annotation_id"] = annotation_id
    if include_ties:
        line["tie"] = tie
    return line


def rewritten_ids(row) -> list[int]:
    """The responses a rewrite is preferred over: the one it rewrote (the chosen one, the ranking's first, both of
    a tie or both-bad, a rating task's only response) and every response rated bad; generation-id order."""
    if not row["rewrite"]:
        return []
    shown = list(row["positions"] or [])
    worse = {int(g) for g, label in (row["ratings"] or {}).items() if label == "bad"}
    if row["kind"] == PAIRWISE and row["choice"] == "chosen" and row["chosen_id"] is not None:
        worse.add(row["chosen_id"])
    elif row["kind"] == PAIRWISE and row["choice"] in ("tie", "both_bad"):
        worse.update(shown)
    elif row["kind"] == RANKING and row["ranking"]:
        worse.add(row["ranking"][0])
    elif row["kind"] == RATING and len(shown) == 1:
        worse.update(shown)
    return sorted(worse)


def _pairs(row, include_ties: bool) -> Iterator[tuple[int, int, float, bool]]:
    """(better id, worse id, margin, tie) of a choice, a tie or a ranking, in a fixed order (most choices come by
    `DirectPairs`; one with a rewrite comes here)."""
    if row["kind"] == PAIRWISE:
        shown = list(row["positions"] or [])
        if row["choice"] == "chosen" and row["chosen_id"] is not None:
            for other in shown:
                if other != row["chosen_id"]:
                    yield row["chosen_id"], other, margin_for(row["strength"], row["meta"]), False
        if row["choice"] in ("tie", "both_bad") and include_ties and len(shown) == 2:
            a, b = sorted(shown)
            yield a, b, 0.0, True
    elif row["kind"] == RANKING and row["ranking"]:
        ranking = list(row["ranking"])
        for i in range(len(ranking)):
            for j in range(i + 1, len(ranking)):
                yield ranking[i], ranking[j], 0.0, False


def trl_lines(
    row, texts, *, conversational: bool, include_ties: bool, rewrites: str = "include"
) -> Iterator[dict[str, Any]]:
    text, messages = row["prompt_text"], row["prompt_messages"]
    prompt = prompt_messages(text, messages) if conversational else prompt_string(text, messages)
    pairs = [] if rewrites == "only" else [(texts[b], texts[w], m, t) for b, w, m, t in _pairs(row, include_ties)]
    if rewrites != "exclude":
        pairs += [(row["rewrite"], texts[w], REWRITE_MARGIN, False) for w in rewritten_ids(row)]
    for better, worse, margin, tie in pairs:
        yield trl_line(
            prompt, better, worse, margin, row["id"], tie, conversational=conversational, include_ties=include_ties
        )


class DirectPairs:
    """The hot path of `trl`: a pairwise choice whose two texts came with the row (see query._join_pair_texts), read
    straight from the tuple: no dict, and JSON decoded only for a chat prompt or a line with an imported margin."""

    def __init__(self, names: tuple[str, ...], *, conversational: bool, include_ties: bool):
        i = names.index
        self.kind, self.choice, self.chosen_id = i("kind"), i("choice"), i("chosen_id")
        self.id, self.text, self.messages, self.meta = i("id"), i("prompt_text"), i("prompt_messages"), i("meta")
        self.strength, self.chosen, self.rejected = i("strength"), i("chosen_text"), i("rejected_text")
        self.user, self.source, self.rewrite = i("user_id"), i("source"), i("rewrite")
        self.conversational, self.include_ties = conversational, include_ties

    def matches(self, r) -> bool:
        # a choice with a rewrite has more pairs than this one: it goes the general way (trl_lines)
        return (
            r[self.kind] == PAIRWISE
            and r[self.choice] == "chosen"
            and r[self.chosen_id] is not None
            and not r[self.rewrite]
        )

    def line(self, r) -> dict[str, Any] | None:
        if r[self.rejected] is None:
            return None
        text, messages = r[self.text], decode_json(r[self.messages])
        prompt = prompt_messages(text, messages) if self.conversational else prompt_string(text, messages)
        return trl_line(
            prompt,
            r[self.chosen],
            r[self.rejected],
            margin_for(r[self.strength], decode_json(r[self.meta])),
            r[self.id],
            False,
            conversational=self.conversational,
            include_ties=self.include_ties,
        )

    def encoded_line(self, r) -> str | None:
        """`jsonl_line(self.line(r))`, built without the dict for the common row (a plain-text prompt, a margin
        from strength): the JSON encoding of lines is most of an export's time."""
        if self.conversational or r[self.messages] not in (None, "null") or r[self.meta] not in (None, "{}", "null"):
            line = self.line(r)
            return None if line is None else jsonl_line(line)
        if r[self.rejected] is None:
            return None
        p0, p1, p2, p3, p4, p5 = self.pieces
        return (
            f"{p0}{_encode_str(r[self.text] or '')}{p1}{_encode_str(r[self.chosen])}{p2}"
            f"{_encode_str(r[self.rejected])}{p3}{margin_for(r[self.strength])!r}{p4}{r[self.id]}{p5}"
        )

    @functools.cached_property
    def pieces(self) -> list[str]:
        """`jsonl_line` of a plain `trl_line` cut around its five values: the text between them comes from the
        one builder, so the fast line cannot drift from it."""
        slots = [f"@slot{n}@" for n in range(5)]
        text = jsonl_line(trl_line(*slots, False, conversational=False, include_ties=self.include_ties))
        return re.split(r'"@slot\d@"', text)

    def count(self, rows: list, stats) -> None:
        stats.annotations += len(rows)
        stats.annotators.update(r[self.user] for r in rows)
        for source, n in Counter(r[self.source] for r in rows).items():
            stats.sources[source] = stats.sources.get(source, 0) + n
        stats.max_annotation_id = rows[-1][self.id]


# ---- kto, rankings, sft ------------------------------------------------------------------------------------------


def _sorted_ratings(row) -> list[tuple[int, str]]:
    return sorted((int(g), v) for g, v in (row["ratings"] or {}).items() if v in ("good", "bad"))


def kto_lines(row, texts) -> Iterator[dict[str, Any]]:
    prompt = prompt_string(row["prompt_text"], row["prompt_messages"])
    for gen_id, label in _sorted_ratings(row):
        yield {"prompt": prompt, "completion": texts[gen_id], "label": label == "good", "annotation_id": row["id"]}


def rankings_lines(row, texts) -> Iterator[dict[str, Any]]:
    if row["kind"] == RANKING and row["ranking"]:
        yield {
            "prompt": prompt_string(row["prompt_text"], row["prompt_messages"]),
            "completions": [texts[g] for g in row["ranking"]],
            "annotation_id": row["id"],
        }


def sft_lines(row, texts) -> Iterator[dict[str, Any]]:
    prompt = prompt_string(row["prompt_text"], row["prompt_messages"])
    if row["rewrite"]:
        yield {"prompt": prompt, "completion": row["rewrite"], "source": "rewrite", "annotation_id": row["id"]}
    for gen_id, label in _sorted_ratings(row):
        if label == "good":
            yield {"prompt": prompt, "completion": texts[gen_id], "source": "good", "annotation_id": row["id"]}


# ---- rich --------------------------------------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def rich_line(row, info) -> dict[str, Any]:
    messages = row["prompt_messages"]
    # A margin where the annotation makes a pair: a choice, or an imported line that brought its own.
    has_margin = row["choice"] == "chosen" or own_margin(row["meta"]) is not None
    pairs = [
        {"chosen_generation_id": b, "rejected_generation_id": w, "source": "ranking" if r else "choice"}
        for b, w, _, tie in _pairs(row, include_ties=False)
        if not tie
        for r in [row["kind"] == RANKING]
    ] + [{"chosen_generation_id": None, "rejected_generation_id": w, "source": "rewrite"} for w in rewritten_ids(row)]
    return {
        "annotation_id": row["id"],
        "task_id": row["task_id"],
        "prompt_id": row["prompt_id"],
        "prompt": prompt_string(row["prompt_text"], messages),
        "prompt_messages": prompt_messages(row["prompt_text"], messages) if messages is not None else None,
        "split": row["split"],
        "annotator": row["annotator"],
        "source": row["source"],
        "kind": row["kind"],
        "choice": row["choice"],
        "chosen_generation_id": row["chosen_id"],
        "strength": row["strength"],
        "margin": margin_for(row["strength"], row["meta"]) if has_margin else None,
        "ranking": list(row["ranking"] or []),
        "ratings": [{"generation_id": g, "label": v} for g, v in _sorted_ratings(row)],
        "critiques": [
            {"generation_id": int(g), "text": str(t)}
            for g, t in sorted((row["critiques"] or {}).items(), key=lambda kv: int(kv[0]))
        ],
        "critique": row["critique"],
        "rewrite": row["rewrite"],
        "flags": [str(f) for f in (row["flags"] or [])],
        "positions": list(row["positions"] or []),
        "time_spent_ms": row["time_spent_ms"],
        "selection": row["selection"],
        "selection_score": row["selection_score"],
        # why a round's reward-hacking checks flagged the task (comma-joined FLAG_REASONS); null for the others
        "flag_reason": row["flag_reason"],
        # the pairs this annotation gives in `trl`; a rewrite's chosen response is the rewrite (no generation id)
        "preference_pairs": pairs,
        # the guidelines shown while it was made: their version id (GET /api/v1/guidelines/versions/{id}) and
        # number within their scope; null when there were none (or an AI label, an import)
        "guideline_version_id": row["guideline_version_id"],
        "guideline_version": row["guideline_version"],
        # labels=adjudicated: a reviewer's final label in place of the task's human annotations (annotation_id is
        # then the newest of those); the reviewer is the line's annotator
        "adjudicated": row.get("adjudication_id") is not None,
        "adjudication_id": row.get("adjudication_id"),
        "reviewer": row["annotator"] if row.get("adjudication_id") is not None else None,
        "review_note": row.get("review_note"),
        "responses": [_response(info[g]) for g in sorted(row["positions"] or []) if g in info],
        "created_at": _iso(row["created_at"]),
    }


def _response(r) -> dict[str, Any]:
    gen_id, text, model_id, model_name, temperature, top_k, top_p, max_new, seed, source = r
    return {
        "generation_id": gen_id,
        "text": text,
        "model_version_id": model_id,
        "policy_version": model_name,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "max_new_tokens": max_new,
        "seed": seed,
        "generation_source": source,
    }
