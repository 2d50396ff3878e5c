"""Routers, one module per resource. Browser routers carry the CSRF check; /api/v1 routers use bearer tokens."""
from app.routes import auth, docs, health, home
from app.routes import admin_tasks, annotate, api_annotations, api_tasks

ROUTERS = [health.router, auth.router, home.router, docs.router]
ROUTERS += [annotate.router, admin_tasks.router, api_tasks.router, api_annotations.router]
from app.routes import jobs  # noqa: E402
ROUTERS += [jobs.router, jobs.api]
from app.routes import rounds  # noqa: E402
ROUTERS += [rounds.router, rounds.api]
from app.routes import admin, admin_exports, admin_generate, admin_models, admin_prompts, admin_stats, admin_users  # noqa: E402
from app.routes import api_exports, api_generate, api_prompts, api_stats, api_users  # noqa: E402
ROUTERS += [admin.router, admin_prompts.router, admin_models.router, admin_generate.router, admin_exports.router,
            admin_stats.router, admin_users.router, api_prompts.router, api_exports.router, api_stats.router,
            api_users.router, api_generate.router]
