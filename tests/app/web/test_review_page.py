"""/review: the disagreement queue, a task with every annotation and its annotator, and the final label's form
(Post/Redirect/Get without JS, a refusal shown on the page); linked from the navigation for reviewers only."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Adjudication
from tests.factories import annotate_pairwise, annotate_rating, make_generation, make_prompt, make_task, pairwise_task


def test_a_reviewer_records_a_final_label_by_plain_forms(client, db, make_user, login):
    alice, bob = make_user(username="alice"), make_user(username="bob")
    task, gens = pairwise_task(db, texts=("Paris.", "Lyon."), overlap=2)
    annotate_pairwise(db, task, alice, chosen=gens[0])
    annotate_pairwise(db, task, bob, chosen=gens[1])
    prompt = make_prompt(db)
    rated = [make_generation(db, prompt, t, seed=i) for i, t in enumerate(("yes", "no"))]
    rating = make_task(db, prompt, rated, kind="rating", overlap=2)
    annotate_rating(db, rating, alice, ratings={rated[0]: "good", rated[1]: "bad"})
    annotate_rating(db, rating, bob, ratings={rated[0]: "bad", rated[1]: "bad"})
    db.commit()
    task_id, chosen, rating_id, rated_ids = task.id, gens[1].id, rating.id, [g.id for g in rated]
    db.rollback()
    csrf = login(make_user("reviewer"))
    assert client.get("/", follow_redirects=False).headers["location"] == "/review"
    queue = client.get("/review")
    assert queue.status_code == 200 and 'href="/review"' in queue.text and 'href="/admin"' not in queue.text
    assert f'href="/review/tasks/{task_id}"' in queue.text and f'href="/review/tasks/{rating_id}"' in queue.text
    page = client.get(f"/review/tasks/{task_id}")
    assert page.status_code == 200 and "alice" in page.text and "bob" in page.text and "<pre>Lyon.</pre>" in page.text

    refused = client.post(f"/review/tasks/{task_id}", data={"csrf_token": csrf, "choice": "tie", "note": " "})
    assert refused.status_code == 422 and "a note is needed" in refused.text
    done = client.post(
        f"/review/tasks/{task_id}",
        data={"csrf_token": csrf, "choice": f"chosen:{chosen}", "strength": "3", "note": "Lyon is wrong? no: B"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/review?notice=task+{task_id}+adjudicated"
    rate = client.post(
        f"/review/tasks/{rating_id}",
        data={"csrf_token": csrf, "gen": [str(g) for g in rated_ids], "rating": ["good", "bad"], "note": "yes fits"},
        follow_redirects=False,
    )
    assert rate.status_code == 303
    assert f'href="/review/tasks/{task_id}"' not in client.get("/review").text
    assert f'href="/review/tasks/{task_id}"' in client.get("/review", params={"state": "adjudicated"}).text
    assert "Lyon is wrong? no: B" in client.get(f"/review/tasks/{task_id}").text
    rows = db.execute(select(Adjudication.task_id, Adjudication.chosen_id, Adjudication.strength, Adjudication.ratings))
    assert sorted(rows.all()) == sorted(
        [(task_id, chosen, 3, None), (rating_id, None, None, {str(rated_ids[0]): "good", str(rated_ids[1]): "bad"})]
    )


def test_an_annotator_gets_no_review_page_nor_link(client, make_user, login):
    login(make_user("annotator"))
    assert client.get("/review").status_code == 403
    assert 'href="/review"' not in client.get("/annotate").text
