"""GET /healthz: liveness and whether the database answers (for load balancers and `docker compose`)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.db import database_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and database check")
def healthz() -> JSONResponse:
    if not database_reachable():
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
