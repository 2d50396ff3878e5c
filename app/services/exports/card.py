"""The dataset card: a README.md beside an export with how to load it, provenance, counts, filters and agreement."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from app.services.exports.writer import ExportResult
from domain.vocabulary import TASK_KINDS

LOADING = {
    "trl": 'load_dataset("json", data_files="{name}")  # RewardTrainer / DPOTrainer (standard preference)',
    "trl-conversational": 'load_dataset("json", data_files="{name}")  # RewardTrainer / DPOTrainer (conversational)',
    "kto": 'load_dataset("json", data_files="{name}")  # KTOTrainer (unpaired preference)',
    "rankings": 'load_dataset("json", data_files="{name}")  # K responses best first; K(K-1)/2 pairs each',
    "sft": 'load_dataset("json", data_files="{name}")  # SFTTrainer (prompt-completion)',
    "rich": 'load_dataset("{kind}", data_files="{name}")  # everything, joined to the others by annotation_id',
}


def write_card(session: Session, *, result: ExportResult, path: Path | None = None) -> Path:
    """A dataset card (README.md beside the export): provenance, counts, filters, agreement."""
    from app.services.stats import agreement  # only the card needs the agreement figures

    path = path or result.path.with_name("README.md")
    source = result.filters.get("source", "all")
    figures = agreement(session, source=source, queue_size=0)
    users = {u for u in result.annotators}
    alpha_lines = []
    for kind in TASK_KINDS:
        a = figures[kind]
        value = "n/a" if a["alpha"] is None else f"{a['alpha']:.3f}"
        alpha_lines.append(f"| {kind} | {a['level']} | {value} | {a['units']} |")
    filters = "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in result.filters.items())
    kind = "csv" if result.csv else "json"
    card = f"""---
pretty_name: rlhf-studio {result.format} export
tags: [rlhf, preference, human-feedback]
---
# rlhf-studio export: `{result.format}`

Exported by rlhf-studio from its annotation database. The same database and filters give the same bytes.

## Files
- `{result.path.name}`: {result.rows} lines, sha256 `{result.sha256}` (also in `{result.path.name}.sha256`)

```python
from datasets import load_dataset
ds = {LOADING[result.format].format(name=result.path.name, kind=kind)}
```

## Provenance and counts
- annotations used: {result.annotations} (highest annotation id {result.max_annotation_id})
- annotators: {len(users)} (pseudonymous ids in the `rich` export)
- by source: {json.dumps(result.sources, sort_keys=True)}
- ties and both-bad included: {"yes (`tie` column)" if result.include_ties else "no"}
- margin from strength: 1 slightly -> 1/3, 2 clearly -> 2/3, 3 much -> 1.0; ranking pairs, rewrite pairs and ties 0.0
- rewrites are preferences in the trl formats: the rewrite over the response it rewrote and over every response rated
  bad (`rich` lists each annotation's pairs with their source: choice, ranking or rewrite)

## Filters
{filters}

## Agreement (Krippendorff's alpha on overlapped tasks, source `{source}`)
| kind | level | alpha | units |
| --- | --- | --- | --- |
{chr(10).join(alpha_lines)}
"""
    path.write_text(card, encoding="utf-8")
    return path
