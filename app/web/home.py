from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from app.deps import PageUser

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(user: PageUser) -> RedirectResponse:
    return RedirectResponse("/admin" if user.role == "admin" else "/annotate", status_code=303)
