"""Routers, one module per resource. Browser routers carry the CSRF check; /api/v1 routers use bearer tokens."""
from app.routes import auth, docs, health, home
from app.routes import admin_tasks, annotate, api_annotations, api_tasks

ROUTERS = [health.router, auth.router, home.router, docs.router]
ROUTERS += [annotate.router, admin_tasks.router, api_tasks.router, api_annotations.router]
from app.routes import jobs  # noqa: E402
ROUTERS += [jobs.router, jobs.api]
from app.routes import rounds  # noqa: E402
ROUTERS += [rounds.router, rounds.api]
