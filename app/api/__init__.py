"""The JSON API under /api/v1, one module per resource, documented by OpenAPI. Callers authenticate with
`Authorization: Bearer <token>`. Routes parse, call one service function, and serialise; a ServiceError becomes
its status with `{"detail": message}` (app.main)."""

from app.api import (
    annotations,
    exports,
    generate,
    gold,
    guidelines,
    health,
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
    health.router,
    tasks.router,
    gold.router,
    annotations.router,
    guidelines.router,
    jobs.router,
    prompts.router,
    exports.router,
    stats.router,
    review.router,
    users.router,
    generate.router,
    models.router,
    rounds.router,
    leaderboard.router,
]
