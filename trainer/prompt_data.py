"""Reading prompt files: JSONL lines {"prompt_id"?, "prompt": str} or {"prompt_id"?, "messages": [...]}, the chat ones
rendered by the tokenizer's chat template with the generation prompt, each encoded to token ids. A prompt that does
not leave room for the tokens to be generated is skipped and counted (trainer.context_fit: the one rule); every
other problem is a DataError naming the file and line.

Two readers, one encoding: `read_prompts` for generate and best-of-n (a prompt_id on every line, unique; it names
the output records and seeds each sample), `load_prompts` for PPO and evaluate (prompt_id optional).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.context_fit import warn_skipped
from trainer.data import DataError, read_jsonl, require_messages


@dataclass
class PromptRecord:
    line: int
    prompt_id: str | int
    ids: list[int]


def encode_text(tok, text: str, **kwargs):
    """`tok(text)` with the tokenizer's BOS exactly once: added as the tokenizer adds it to any text, unless the text
    already starts with it (a chat template that writes its own BOS, as Llama 3's and Mistral's do, would otherwise
    get a second one). kwargs go to the tokenizer (return_offsets_mapping...)."""
    wrote_bos = bool(tok.bos_token) and text.startswith(tok.bos_token)
    return tok(text, add_special_tokens=not wrote_bos, **kwargs)


def chat_text(tok, messages: list[dict], *, add_generation_prompt: bool) -> str:
    """The conversation rendered by the tokenizer's own chat template. A conversation that ends in an answer ends at
    the EOS that closes it: ChatML writes a newline after <|im_end|>, but the policy stops at <|im_end|>, so a
    sequence scored or learned from ends where a sampled one does."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    eos = tok.eos_token
    if not add_generation_prompt and eos and eos in text:
        end = text.rindex(eos) + len(eos)
        if not text[end:].strip():
            text = text[:end]
    return text


def encode_prompt(tok, obj: dict, path: str | Path, line: int) -> list[int]:
    """The token ids of one prompt line (empty for an empty prompt string)."""
    if "messages" in obj:
        if getattr(tok, "chat_template", None) is None:
            raise DataError(path, line, "chat prompt needs a tokenizer with a chat template")
        text = chat_text(tok, require_messages(obj, path, line), add_generation_prompt=True)
        return list(encode_text(tok, text)["input_ids"])
    if isinstance(obj.get("prompt"), str):
        return list(tok(obj["prompt"])["input_ids"])
    raise DataError(path, line, 'expected "prompt" (string) or "messages"')


def _prompt_id(obj: dict, path: str | Path, line: int, default: str | None = None) -> str | int:
    pid = obj.get("prompt_id", default)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise DataError(path, line, '"prompt_id" must be a string or an integer')
    return pid


def _fits(ids: list[int], max_prompt_tokens: int, line: int, skipped: list[int]) -> bool:
    if max_prompt_tokens and len(ids) > max_prompt_tokens:
        skipped.append(line)
        return False
    return True


def _finish(path: str | Path, kept: list, skipped: list[int], max_prompt_tokens: int) -> None:
    warn_skipped(path, "prompt(s)", skipped, max_prompt_tokens)
    if skipped and not kept:
        raise DataError(
            path,
            skipped[0],
            f"no prompt fits: every prompt leaves less than --max-new-tokens of the model's context "
            f"(at most {max_prompt_tokens} prompt tokens)",
        )


def read_prompts(
    tok, path: str | Path, *, max_prompt_tokens: int, skipped: list[int] | None = None
) -> list[PromptRecord]:
    """Every line that fits as a PromptRecord, in file order; prompt_id required and unique. An empty prompt starts
    from BOS (GPT-2 style: the document separator). Lines of prompts too long go into `skipped`."""
    records, seen = [], {}
    skipped = [] if skipped is None else skipped
    for line, obj in read_jsonl(path):
        pid = _prompt_id(obj, path, line)
        if str(pid) in seen:
            raise DataError(path, line, f"duplicate prompt_id {pid!r} (first at line {seen[str(pid)]})")
        seen[str(pid)] = line
        ids = encode_prompt(tok, obj, path, line) or [
            tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ]
        if _fits(ids, max_prompt_tokens, line, skipped):
            records.append(PromptRecord(line, pid, ids))
    _finish(path, records, skipped, max_prompt_tokens)
    return records


def load_prompts(
    path: str | Path, tokenizer, max_prompt_tokens: int = 0, skipped: list[int] | None = None
) -> list[tuple[str, list[int]]]:
    """[(prompt_id, token ids)]; prompt_id defaults to the line number. An empty prompt, or a file with none, is an
    error. max_prompt_tokens > 0: longer prompts are skipped, their lines put into `skipped`."""
    prompts = []
    skipped = [] if skipped is None else skipped
    for line, obj in read_jsonl(path):
        pid = _prompt_id(obj, path, line, default=str(line))
        ids = encode_prompt(tokenizer, obj, path, line)
        if not ids:
            raise DataError(path, line, "empty prompt")
        if _fits(ids, max_prompt_tokens, line, skipped):
            prompts.append((str(pid), ids))
    _finish(path, prompts, skipped, max_prompt_tokens)
    if not prompts:
        raise DataError(path, 1, "no prompts")
    return prompts


def prompt_conversations(path: str | Path) -> dict[str, list[dict]]:
    """{prompt_id: messages} of the chat lines of a prompt file, keyed as load_prompts keys them (prompt_id, else the
    line number): what a reward-model judge renders with its own template."""
    return {
        str(_prompt_id(obj, path, line, default=str(line))): obj["messages"]
        for line, obj in read_jsonl(path)
        if isinstance(obj.get("messages"), list)
    }
