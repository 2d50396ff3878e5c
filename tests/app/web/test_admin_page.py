"""Admin pages: each renders for an admin."""

from tests.factories import build_dataset


def test_every_admin_page_renders(client, db, make_user, login):
    build_dataset(db)
    login(make_user("admin"))
    for path, needle in [
        ("/admin", "Recent jobs"),
        ("/admin/prompts", "Prompt file"),
        ("/admin/models", "Register"),
        ("/admin/generate", "Responses per prompt K"),
        ("/admin/exports", "Margin from strength"),
        ("/admin/stats", "Krippendorff"),
        ("/admin/users", "New token"),
    ]:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert needle in page.text, path
    stats = client.get("/admin/stats").text
    assert "Disagreement queue" in stats and 'data-testid="alpha-pairwise"' in stats and "alice" in stats


def test_dashboard_shows_the_world_build_steps_and_polls_only_while_it_runs(client, db, make_user, login):
    import time

    from tests.factories import make_job

    login(make_user("admin"))
    assert 'id="world-build"' not in client.get("/admin").text  # no build, no region
    job = make_job(db, kind="world", status="running", progress_done=2.5, progress_total=5.0)
    now = time.time()
    job.result = {
        "steps": [
            dict(name="data", state="done", step=1, total=1, started_at=now - 60, finished_at=now - 59),
            dict(name="tokenizer", state="done", step=1, total=1, started_at=now - 59, finished_at=now - 50),
            {
                "name": "pretrain",
                "state": "running",
                "step": 120,
                "total": 240,
                "started_at": now - 50,
                "paced_from": [20, now - 40],
            },
            {"name": "sft", "state": "waiting"},
            {"name": "register", "state": "waiting"},
        ]
    }
    db.commit()
    page = client.get("/admin").text
    assert 'id="world-build"' in page and 'hx-trigger="every 2s"' in page and "Recent jobs" in page
    region = client.get("/admin", headers={"HX-Request": "true"}).text
    assert region.lstrip().startswith('<section id="world-build"') and "Recent jobs" not in region
    assert "step 120/240" in region and "about 48 s left" in region and "50%" in region
    assert region.count("waiting") >= 2 and "done in 9 s" in region
    job.status, job.progress_done = "succeeded", 5.0
    db.commit()
    done = client.get("/admin", headers={"HX-Request": "true"}).text
    assert "succeeded" in done and "hx-trigger" not in done  # the region stops polling
