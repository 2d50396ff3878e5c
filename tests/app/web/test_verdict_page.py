"""The round page's human verdict (the win-rate beside the reward model's, the button that queues it) and the
leaderboard page."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Job
from tests.factories import (
    annotate_pairwise,
    make_annotator,
    make_generation,
    make_job,
    make_model,
    make_prompt,
    make_task,
)


def test_the_round_page_queues_the_verdict_and_shows_the_human_win_rate(client, login, make_user, db):
    old, new = make_model(db, "tiny-sft"), make_model(db, "policy-r1", stage="rlhf")
    make_prompt(db, split="eval")
    round_job = make_job(db, kind="round", status="succeeded")
    round_job.config = {}  # the defaults
    round_job.result = {"policy_id": new.id, "baseline_policy_id": old.id, "evaluation": {"rm_win_rate": 0.7}}
    db.commit()
    csrf = login(make_user("admin"))
    page = client.get(f"/admin/rounds/{round_job.id}")
    assert page.status_code == 200 and "Human verdict" in page.text and "Queue the human verdict" in page.text

    response = client.post(f"/admin/rounds/{round_job.id}/verdict", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/rounds/{round_job.id}"
    job = db.scalar(select(Job).where(Job.kind == "generate"))
    assert job.config["verdict"] == {"round_id": round_job.id, "baseline_id": old.id}
    db.commit()  # end the read: the page's own transaction waits for the SQLite writer gate
    page = client.get(f"/admin/rounds/{round_job.id}")
    assert f"job {job.id}</a> (queued)" in page.text and "Queue the human verdict" not in page.text
    again = client.post(f"/admin/rounds/{round_job.id}/verdict", data={"csrf_token": csrf}, follow_redirects=False)
    assert again.status_code == 409

    # judged: the win-rate with its interval, in the evaluation table and the verdict section
    for winner in (new, new, old):
        prompt = make_prompt(db, split="eval")
        gens = {m: make_generation(db, prompt, m.name, model=m) for m in (old, new)}
        task = make_task(db, prompt, list(gens.values()))
        task.verdict_round_id = round_job.id
        annotate_pairwise(db, task, make_annotator(db), chosen=gens[winner])
    db.commit()
    page = client.get(f"/admin/rounds/{round_job.id}")
    assert "won 2, tied 0, lost 1" in page.text and "win-rate 66.7% (95% interval" in page.text

    board = client.get("/leaderboard")
    assert board.status_code == 200 and 'data-testid="leaderboard"' in board.text
    assert board.text.index("policy-r1") < board.text.index("tiny-sft")
    assert "3 human comparisons" in board.text


def test_the_leaderboard_is_admin_only(client, login, make_user):
    login(make_user("annotator"))
    assert client.get("/leaderboard", follow_redirects=False).status_code == 403
