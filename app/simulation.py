"""Simulated annotators driving a running server through its public HTTP API only (`rlhf simulate`).

The choice model is trainer.world.annotators (Bradley-Terry / Plackett-Luce on the gold judge's score with
per-annotator noise, position bias and length bias; some annotators careless or adversarial); this module only
speaks HTTP: it creates the annotators and their tokens through the admin API, then asks for tasks and submits
labels as a person would.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from trainer.world import annotators as choice_model

# Gold-score gap (in judge units) above which a preference is "clearly" / "much" better.
STRENGTH_GAPS = (0.15, 0.4)


class SimulationError(RuntimeError):
    pass


@dataclass
class SimulationReport:
    labels: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_annotator: Counter = field(default_factory=Counter)
    pairwise_labels: list[choice_model.Label] = field(default_factory=list)
    behaviours: dict[str, str] = field(default_factory=dict)  # annotator name -> honest | careless | adversarial
    labels_by_behaviour: dict[str, list[choice_model.Label]] = field(default_factory=dict)
    critiques: int = 0
    rewrites: int = 0
    replays: int = 0
    seconds: float = 0.0
    requested: int = 0
    out_of_tasks: bool = False  # some annotator was told "nothing left" before `requested` labels were made

    def agreement_with_gold(self) -> float:
        """Share of labels whose first choice beats the runner-up under the gold judge (gold ties left out)."""
        return choice_model.pair_agreement(self.pairwise_labels)

    def as_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "by_kind": dict(self.by_kind),
            "by_annotator": dict(self.by_annotator),
            "agreement_with_gold": round(self.agreement_with_gold(), 4),
            "agreement_with_gold_by_behaviour": {
                b: round(choice_model.pair_agreement(labels), 4)
                for b, labels in sorted(self.labels_by_behaviour.items())
            },
            "behaviours": dict(sorted(self.behaviours.items())),
            "critiques": self.critiques,
            "rewrites": self.rewrites,
            "seconds": round(self.seconds, 2),
            "labels_per_second": round(self.labels / self.seconds, 2) if self.seconds else None,
            "requested": self.requested,
            "out_of_tasks": self.out_of_tasks,
        }

    def shortfall(self) -> str | None:
        """Why fewer labels were made than asked for, in words; None when all were made."""
        if self.labels >= self.requested:
            return None
        why = "ran out of tasks" if self.out_of_tasks else "stopped (time limit)"
        return f"{why}: made {self.labels} of the {self.requested} labels asked for"


def prompt_as_text(prompt: str | list[dict[str, str]]) -> str:
    """What the judge reads: the string prompt, or the last user turn of a chat prompt."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def annotation_payload(task: dict[str, Any], lab: choice_model.Label, rng: random.Random) -> dict[str, Any]:
    """The POST /api/v1/annotations body for this label, by task kind."""
    ids = [r["id"] for r in task["responses"]]
    body: dict[str, Any] = {"task_id": task["task_id"], "time_spent_ms": rng.randint(4_000, 60_000)}
    kind = task["kind"]
    if kind == "pairwise":
        first, second = lab.ranking[0], lab.ranking[1]
        if not lab.good[0] and not lab.good[1] and rng.random() < 0.5:
            body["choice"] = "both_bad"
        elif lab.gold[first] == lab.gold[second] and rng.random() < 0.5:
            body["choice"] = "tie"
        else:
            gap = abs(lab.gold[first] - lab.gold[second])
            body.update(choice="chosen", chosen_id=ids[first], strength=1 + sum(gap > g for g in STRENGTH_GAPS))
    elif kind == "ranking":
        body["ranking"] = [ids[i] for i in lab.ranking]
    elif kind == "rating":
        body["ratings"] = {str(ids[i]): ("good" if good else "bad") for i, good in enumerate(lab.good)}
    else:
        raise SimulationError(f"unknown task kind {kind!r}")
    if lab.critique is not None:
        body["critique"] = lab.critique[1]
    if lab.rewrite is not None:
        body["rewrite"] = lab.rewrite
    return body


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        raise SimulationError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def create_annotator_tokens(
    client: httpx.Client, *, admin_token: str, annotators: list[choice_model.Annotator]
) -> dict[str, str]:
    """Creates (or reuses) each annotator's account and a fresh token for it, through the admin API."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    existing = {u["username"]: u for u in _check(client.get("/api/v1/users", headers=headers), "list users").json()}
    tokens = {}
    for annotator in annotators:
        user = existing.get(annotator.name)
        if user is None:
            user = _check(
                client.post(
                    "/api/v1/users",
                    headers=headers,
                    json={
                        "username": annotator.name,
                        "role": "annotator",
                        "password": f"sim-{random.Random(annotator.name).getrandbits(64):x}",
                    },
                ),
                f"create user {annotator.name}",
            ).json()
        elif not user.get("active", user.get("is_active", True)):
            raise SimulationError(f"user {annotator.name} exists but is deactivated")
        token = _check(
            client.post(f"/api/v1/users/{user['id']}/tokens", headers=headers, json={"name": "rlhf simulate"}),
            f"token for {annotator.name}",
        ).json()
        tokens[annotator.name] = token["token"]
    return tokens


def run_simulation(
    *,
    url: str,
    admin_token: str,
    annotators: int,
    labels: int,
    noise: float = 0.1,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    seed: int = 0,
    timeout_s: float = 600.0,
    scorer: choice_model.Scorer | None = None,
    careless: int = 0,
    careless_rate: float = 1.0,
    adversarial: int = 0,
    adversarial_rate: float = 1.0,
) -> SimulationReport:
    """Annotators label concurrently (one thread each) until `labels` are stored or no task is left for anyone.
    `scorer` (prompt, response) -> utility is what they label by: the gold judge unless given (a hidden rule of
    trainer.world.rules, say). `careless` of them label at random on `careless_rate` of their tasks, `adversarial`
    invert their labels on `adversarial_rate` (trainer.world.annotators)."""
    try:
        people = choice_model.make_annotators(
            annotators,
            noise=noise,
            position_bias=position_bias,
            length_bias=length_bias,
            seed=seed,
            careless=careless,
            careless_rate=careless_rate,
            adversarial=adversarial,
            adversarial_rate=adversarial_rate,
        )
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    report = SimulationReport(requested=labels, behaviours={p.name: p.behaviour for p in people})
    lock = threading.Lock()
    errors: list[BaseException] = []
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30.0) as admin_client:
        tokens = create_annotator_tokens(admin_client, admin_token=admin_token, annotators=people)

    def budget_left() -> bool:
        with lock:
            return report.labels < labels and not errors and time.perf_counter() - started < timeout_s

    def work(person: choice_model.Annotator) -> None:
        rng = random.Random(f"{seed}|{person.name}|http")
        headers = {"Authorization": f"Bearer {tokens[person.name]}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            while budget_left():
                response = _check(client.get("/api/v1/tasks/next"), "next task")
                if response.status_code == 204:
                    with lock:
                        report.out_of_tasks = True
                    return
                task = response.json()
                prompt = prompt_as_text(task["prompt"])
                lab = choice_model.label(
                    person,
                    prompt,
                    [r["text"] for r in task["responses"]],
                    key=str(task["task_id"]),
                    **({"scorer": scorer} if scorer is not None else {}),
                )
                body = annotation_payload(task, lab, rng)
                with lock:
                    if report.labels >= labels:
                        return  # the lease expires on its own; nothing half-done is stored
                    report.labels += 1  # reserve the slot so the threads stop at exactly `labels`
                key = f"sim-{seed}-{person.name}-{task['task_id']}"
                answer = client.post("/api/v1/annotations", json=body, headers={"Idempotency-Key": key})
                if answer.status_code not in (200, 201):
                    with lock:
                        report.labels -= 1
                    if answer.status_code == 409:  # lease lost to expiry and the task filled up: ask again
                        continue
                    _check(answer, f"submit task {task['task_id']}")
                with lock:
                    report.replays += answer.status_code == 200
                    report.by_kind[task["kind"]] += 1
                    report.by_annotator[person.name] += 1
                    report.critiques += "critique" in body
                    report.rewrites += "rewrite" in body
                    if task["kind"] in ("pairwise", "ranking"):
                        report.pairwise_labels.append(lab)
                        report.labels_by_behaviour.setdefault(person.behaviour, []).append(lab)

    def guarded(person):
        try:
            work(person)
        except BaseException as exc:  # surfaced to the caller below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(p,), daemon=True) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - started
    if errors:
        raise SimulationError(str(errors[0])) from errors[0]
    return report
