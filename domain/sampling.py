"""The ranges of the sampling settings, for every place that samples (the trainer's generate and best-of-n
stages, the service's generation requests, a round's next tasks and evaluation)."""

from __future__ import annotations

TEMPERATURE_MIN = 0.0  # 0 = greedy
TOP_K_MIN = 0  # 0 = off
TOP_P_MAX = 1.0  # top-p is in (0, 1]; 1.0 = off
MAX_NEW_TOKENS_MAX = 4096
RESPONSES_PER_PROMPT_MIN = 2  # K: responses an annotator compares
RESPONSES_PER_PROMPT_MAX = 8
SEED_LIMIT = 2**63  # seeds are non-negative 64-bit integers


def sampling_problem(
    *, temperature: float, top_k: int, top_p: float, max_new_tokens: int, flag: str = ""
) -> str | None:
    """The first out-of-range setting, said with its name (prefixed by `flag`, "--" on the command line)."""
    if temperature < TEMPERATURE_MIN:
        return f"{flag}temperature must be >= 0 (0 = greedy)"
    if top_k < TOP_K_MIN:
        return f"{flag}top-k must be >= 0 (0 = off)"
    if not 0 < top_p <= TOP_P_MAX:
        return f"{flag}top-p must be in (0, 1] (1.0 = off)"
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_MAX:
        return f"{flag}max-new-tokens must be 1..{MAX_NEW_TOKENS_MAX}"
    return None
