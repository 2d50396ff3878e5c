"""app.simulation against a live server: simulated annotators label over the HTTP API and say when they ran out."""

from __future__ import annotations

from app.simulation import run_simulation
from tests.factories import make_tasks, task_line


def test_annotators_stop_when_no_task_is_left_and_say_how_many_they_made(db, live_server, make_user, make_token):
    make_tasks(db, *(task_line(prompt=f"question {i}?") for i in range(3)))
    token = make_token(make_user("admin"))
    db.commit()
    report = run_simulation(url=live_server, admin_token=token, annotators=2, labels=10, seed=0, timeout_s=60)
    assert (report.labels, report.requested, report.out_of_tasks) == (3, 10, True)
    assert report.shortfall() == "ran out of tasks: made 3 of the 10 labels asked for"


def test_careless_and_adversarial_annotators_label_over_http_and_are_reported_apart(
    db, live_server, make_user, make_token
):
    make_tasks(db, *(task_line(prompt=f"question {i}?", overlap=3) for i in range(4)))
    token = make_token(make_user("admin"))
    db.commit()
    report = run_simulation(
        url=live_server, admin_token=token, annotators=3, labels=12, seed=0, timeout_s=60, careless=1, adversarial=1
    )
    assert report.labels == 12
    assert sorted(report.behaviours.values()) == ["adversarial", "careless", "honest"]
    summary = report.as_dict()
    assert set(summary["agreement_with_gold_by_behaviour"]) <= {"adversarial", "careless", "honest"}
    assert sum(report.by_annotator.values()) == 12
