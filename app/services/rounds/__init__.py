"""Training rounds: snapshot -> reward model -> PPO | DPO | rejection sampling -> evaluate -> register -> next
tasks. `config` (what a round runs with), `lineage` (which models it trains from), `start` (the checks and the
job), `job` (the `round` job kind and its stages), `trainer_steps` (one resumable trainer run), `data` (the files
the stages read), `evaluate` (the evaluation and its checks), `promotion` (the gate, and promotion by hand),
`listing` and `report` (what the pages and the API show), `form` (the start form), `overview` (the Rounds page).
The names other modules use are here."""

from app.services.rounds.config import (
    ROUND_KIND,
    STAGE_CONFIG_CLASSES,
    NextTasks,
    RoundConfig,
    RoundError,
    as_round_config,
    parse_round_config,
)
from app.services.rounds.data import split_reward_data
from app.services.rounds.evaluate import hacking_warnings
from app.services.rounds.lineage import Lineage, current_policy, resolve_lineage
from app.services.rounds.listing import list_rounds, round_to_dict
from app.services.rounds.promotion import promote_round, promotion_verdict
from app.services.rounds.start import (
    active_round,
    preference_pairs,
    start_round,
    too_little_data,
    untrusted_ai_labels,
)

__all__ = [
    "ROUND_KIND",
    "STAGE_CONFIG_CLASSES",
    "Lineage",
    "NextTasks",
    "RoundConfig",
    "RoundError",
    "active_round",
    "as_round_config",
    "current_policy",
    "hacking_warnings",
    "list_rounds",
    "parse_round_config",
    "preference_pairs",
    "promote_round",
    "promotion_verdict",
    "resolve_lineage",
    "round_to_dict",
    "split_reward_data",
    "start_round",
    "too_little_data",
    "untrusted_ai_labels",
]
