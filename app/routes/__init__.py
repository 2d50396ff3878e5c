"""Routers, one module per resource. Browser routers carry the CSRF check; /api/v1 routers use bearer tokens."""
from app.routes import auth, docs, health, home

ROUTERS = [health.router, auth.router, home.router, docs.router]
