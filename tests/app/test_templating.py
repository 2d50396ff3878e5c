"""app.templating's markdown: text only, no images (a remote image in a prompt would be fetched by every
annotator's browser: a tracking pixel)."""

from app.templating import render_markdown


def test_markdown_renders_no_image_and_no_html():
    html = str(render_markdown("**bold** ![pixel](https://tracker.example/p.gif?u=1) <img src=x onerror=alert(1)>"))
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and 'src="https://tracker.example' not in html
    assert "&lt;img" in html  # raw HTML shows as text


def test_an_image_in_a_prompt_is_not_shown_as_an_image(client, db, make_user, login):
    from tests.factories import make_tasks, task_line

    make_tasks(db, task_line(prompt="look ![x](https://tracker.example/pixel.gif)"))
    login(make_user("annotator"))
    page = client.get("/annotate")
    assert page.status_code == 200 and "look" in page.text and "<img" not in page.text
