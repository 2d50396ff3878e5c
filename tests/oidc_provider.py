"""A small but real OpenID Connect provider for tests (a stand-in for an external identity provider, not product code).

It serves discovery, its public key set, an authorization endpoint that signs in `provider.user` at once (no consent
screen: the test decides who signs in), a token endpoint (client secret by HTTP Basic, single-use codes, the exact
redirect URI, PKCE S256 checked) that returns an RS256-signed ID token, and userinfo. `provider.tamper` overrides
claims of the next ID tokens, and `provider.sign_with_other_key` signs them with a key it never published: what a
forged or misdirected token looks like to the service.

    with running_provider() as provider:
        provider.user = {"sub": "u-1", "preferred_username": "ada"}
        ... RLHF_OIDC_ISSUER=provider.issuer, RLHF_OIDC_CLIENT_ID=provider.client_id, ...
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.factories import free_port, wait_for


class Provider:
    def __init__(self, port: int) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self.port = port
        self.client_id = "rlhf-studio"
        self.client_secret = "test-client-secret"
        self.user: dict[str, Any] = {"sub": "person-1", "preferred_username": "ada", "email": "ada@example.org"}
        self.tamper: dict[str, Any] = {}  # claims every next ID token gets instead (aud, iss, exp, nonce...)
        self.sign_with_other_key = False
        self.discovery_issuer: str | None = None  # what discovery says the issuer is (None: the real one)
        self._key = RSAKey.generate_key(2048, parameters={"kid": "published"})
        self._other_key = RSAKey.generate_key(2048, parameters={"kid": "published"})  # same kid, never published
        self._codes: dict[str, dict[str, Any]] = {}
        self._access_tokens: dict[str, dict[str, Any]] = {}
        self.token_requests = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/userinfo", self.userinfo),
            ]
        )

    async def discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email"],
            }
        )

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse({"keys": [self._key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        refused = (
            q.get("client_id") != self.client_id
            or q.get("response_type") != "code"
            or "openid" not in q.get("scope", "").split()
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("redirect_uri")
        )
        if refused:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "redirect_uri": q["redirect_uri"],
            "nonce": q.get("nonce"),
            "code_challenge": q["code_challenge"],
            "user": dict(self.user),
        }
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self._codes.pop(str(form.get("code")), None)  # single use
        if form.get("grant_type") != "authorization_code" or grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if form.get("redirect_uri") != grant["redirect_uri"] or challenge != grant["code_challenge"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant["user"]
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "at_hash": create_half_hash(access_token, "RS256").decode(),
            **grant["user"],
            **self.tamper,
        }
        key = self._other_key if self.sign_with_other_key else self._key
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return JSONResponse(
            {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        )

    async def userinfo(self, request: Request) -> Response:
        user = self._access_tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        return JSONResponse(user) if user else JSONResponse({"error": "invalid_token"}, status_code=401)


@contextmanager
def running_provider() -> Iterator[Provider]:
    """A provider under uvicorn on a free local port, in a thread of this process (stopped on exit)."""
    import uvicorn

    provider = Provider(free_port())
    server = uvicorn.Server(
        uvicorn.Config(provider.app(), host="127.0.0.1", port=provider.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the OIDC provider to start")
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(15)
