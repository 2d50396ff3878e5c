from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from app.deps import PageUser

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(user: PageUser) -> RedirectResponse:
    start = {"admin": "/admin", "reviewer": "/review"}.get(user.role, "/annotate")
    return RedirectResponse(start, status_code=303)
