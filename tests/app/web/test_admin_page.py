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
