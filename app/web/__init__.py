"""The browser's pages, one module per resource: htmx pages where one URL returns the page or a block of it, forms
that work without JS (Post/Redirect/Get). Every router carries the CSRF check. Routes parse, call one service
function, and render."""

from app.web import (
    admin,
    annotate,
    auth,
    data_manager,
    docs,
    exports,
    generate,
    gold,
    guidelines,
    home,
    jobs,
    leaderboard,
    models,
    prompts,
    review,
    rounds,
    stats,
    tasks,
    users,
)

ROUTERS = [
    auth.router,
    home.router,
    docs.router,
    annotate.router,
    review.router,
    tasks.router,
    jobs.router,
    rounds.router,
    leaderboard.router,
    admin.router,
    prompts.router,
    guidelines.router,
    data_manager.router,
    models.router,
    generate.router,
    exports.router,
    stats.router,
    gold.router,
    users.router,
]
