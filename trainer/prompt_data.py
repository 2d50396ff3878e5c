"""Reading prompt files: JSONL lines {"prompt_id"?, "prompt": str} or {"prompt_id"?, "messages": [...]}, the chat ones
rendered by the tokenizer's chat template with the generation prompt, each encoded to token ids and checked to fit
the model's context with the tokens to be generated. Every problem is a DataError naming the file and line.

Two readers, one encoding: `read_prompts` for generate and best-of-n (a prompt_id on every line, unique; it names
the output records and seeds each sample), `load_prompts` for PPO and evaluate (prompt_id optional).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data import DataError, read_jsonl, require_messages


@dataclass
class PromptRecord:
    line: int
    prompt_id: str | int
    ids: list[int]


def encode_prompt(tok, obj: dict, path: str | Path, line: int) -> list[int]:
    """The token ids of one prompt line (empty for an empty prompt string)."""
    if "messages" in obj:
        if getattr(tok, "chat_template", None) is None:
            raise DataError(path, line, "chat prompt needs a tokenizer with a chat template")
        text = tok.apply_chat_template(require_messages(obj, path, line), tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    if isinstance(obj.get("prompt"), str):
        return list(tok(obj["prompt"])["input_ids"])
    raise DataError(path, line, 'expected "prompt" (string) or "messages"')


def _prompt_id(obj: dict, path: str | Path, line: int, default: str | None = None) -> str | int:
    pid = obj.get("prompt_id", default)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise DataError(path, line, '"prompt_id" must be a string or an integer')
    return pid


def _check_fits(ids: list[int], max_prompt_tokens: int, path: str | Path, line: int) -> None:
    if max_prompt_tokens and len(ids) > max_prompt_tokens:
        raise DataError(
            path,
            line,
            f"prompt is {len(ids)} tokens; with --max-new-tokens it exceeds the "
            f"model's context (at most {max_prompt_tokens} prompt tokens)",
        )


def read_prompts(tok, path: str | Path, *, max_prompt_tokens: int) -> list[PromptRecord]:
    """Every line as a PromptRecord, in file order; prompt_id required and unique. An empty prompt starts from BOS
    (GPT-2 style: the document separator)."""
    records, seen = [], {}
    for line, obj in read_jsonl(path):
        pid = _prompt_id(obj, path, line)
        if str(pid) in seen:
            raise DataError(path, line, f"duplicate prompt_id {pid!r} (first at line {seen[str(pid)]})")
        seen[str(pid)] = line
        ids = encode_prompt(tok, obj, path, line) or [
            tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ]
        _check_fits(ids, max_prompt_tokens, path, line)
        records.append(PromptRecord(line, pid, ids))
    return records


def load_prompts(path: str | Path, tokenizer, max_prompt_tokens: int = 0) -> list[tuple[str, list[int]]]:
    """[(prompt_id, token ids)]; prompt_id defaults to the line number. An empty prompt, or a file with none, is an
    error. max_prompt_tokens > 0: longer prompts are an error naming the line (they would not fit the context)."""
    prompts = []
    for line, obj in read_jsonl(path):
        pid = _prompt_id(obj, path, line, default=str(line))
        ids = encode_prompt(tokenizer, obj, path, line)
        if not ids:
            raise DataError(path, line, "empty prompt")
        _check_fits(ids, max_prompt_tokens, path, line)
        prompts.append((str(pid), ids))
    if not prompts:
        raise DataError(path, 1, "no prompts")
    return prompts
