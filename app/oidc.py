"""Single sign-on by OpenID Connect: the authorization-code flow with state, nonce and PKCE (S256).

`OidcClient` reads the provider's discovery document and keys, makes the URL that sends a browser to the provider,
and turns the code the browser brings back into the claims of a verified ID token (signature by the provider's
published keys; iss, aud, exp, iat, nonce and at_hash checked). Who that person is here is app.services.users'
(`sign_in_with_oidc`). Between the two legs, the flow's secrets live in a signed, short-lived, HttpOnly cookie
(`FlowCookie`): the callback counts only in the browser that started it.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oidc.core import CodeIDToken
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from app.services.errors import ServiceError
from app.settings import Settings

try:  # authlib's HTTP client runs on httpx2 where that is installed, else on httpx: its transport errors are either's
    from httpx2 import HTTPError as _ClientHTTPError
except ImportError:  # pragma: no cover - depends on the environment
    _ClientHTTPError = httpx.HTTPError

DISCOVERY_PATH = "/.well-known/openid-configuration"
FLOW_COOKIE = "rlhf_oidc"
FLOW_PATH = "/auth/oidc"
FLOW_MAX_AGE_S = 600  # time to sign in at the provider
METADATA_TTL_S = 3600  # discovery and keys are read again after this (a provider rotates its keys)
HTTP_TIMEOUT_S = 10.0
CLOCK_LEEWAY_S = 60
# Signed by the provider's published keys only: never "none", never a MAC keyed with a secret others may share.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
TRANSPORT_ERRORS = (httpx.HTTPError, _ClientHTTPError, ValueError)  # ValueError: a body that is not JSON

log = logging.getLogger(__name__)


class OidcError(ServiceError):
    """A sign-in that cannot go on; the message is safe to show."""

    status = 400


class ProviderUnavailable(OidcError):
    """The provider did not answer, or not as an OpenID Connect provider does."""

    status = 502


@dataclass(frozen=True)
class Flow:
    """One sign-in between the redirect to the provider and the callback: its state (the callback's proof that this
    browser started it), nonce (the ID token's), PKCE code verifier, and the local page to go to afterwards."""

    state: str
    nonce: str
    code_verifier: str
    next: str

    @classmethod
    def start(cls, next: str) -> Flow:
        return cls(state=generate_token(32), nonce=generate_token(32), code_verifier=generate_token(64), next=next)


class FlowCookie:
    """The flow in a cookie signed with the session secret (its own salt), refused after FLOW_MAX_AGE_S."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="rlhf-oidc-flow")

    def dumps(self, flow: Flow) -> str:
        return self._serializer.dumps([flow.state, flow.nonce, flow.code_verifier, flow.next])

    def loads(self, cookie: str | None) -> Flow | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=FLOW_MAX_AGE_S)
        except BadSignature:
            return None
        if not (isinstance(data, list) and len(data) == 4 and all(isinstance(v, str) for v in data)):
            return None
        return Flow(*data)


class OidcClient:
    """The configured provider. Nothing is fetched until the first sign-in (the service starts with the provider
    down); discovery and keys are then kept for METADATA_TTL_S, the keys read again at once for an unknown key id."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._client_secret = settings.oidc_client_secret
        self._scopes = settings.oidc_scopes
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def authorization_url(self, flow: Flow, *, redirect_uri: str) -> str:
        """Where to send the browser: the provider's authorization endpoint with this flow's parameters."""
        metadata = self._discovery()
        with self._oauth_client(redirect_uri) as client:
            url, _state = client.create_authorization_url(
                metadata["authorization_endpoint"], state=flow.state, code_verifier=flow.code_verifier, nonce=flow.nonce
            )
        return url

    def verified_claims(self, flow: Flow, *, state: str, code: str, redirect_uri: str) -> dict[str, Any]:
        """The claims of the ID token the code is exchanged for, once every check has passed."""
        if not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise OidcError("The sign-in's state does not match this browser's: start the sign-in again.")
        if not code:
            raise OidcError("The provider sent no authorization code: start the sign-in again.")
        metadata = self._discovery()
        try:
            with self._oauth_client(redirect_uri) as client:
                token = client.fetch_token(
                    metadata["token_endpoint"],
                    code=code,
                    code_verifier=flow.code_verifier,
                    grant_type="authorization_code",
                )
        except OAuthError as exc:
            raise OidcError(f"The provider refused the sign-in code ({exc.error}): start the sign-in again.") from None
        except TRANSPORT_ERRORS as exc:
            log.warning("OIDC token request to %s failed: %s", metadata["token_endpoint"], exc)
            raise ProviderUnavailable("The sign-in provider did not answer: try again later.") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("The provider sent no ID token.", status=401)
        return self._verify(id_token, nonce=flow.nonce, access_token=token.get("access_token"))

    def _verify(self, id_token: str, *, nonce: str, access_token: str | None) -> dict[str, Any]:
        metadata = self._discovery()
        algorithms = [
            a for a in metadata.get("id_token_signing_alg_values_supported", ["RS256"]) if a in ASYMMETRIC_ALGORITHMS
        ]
        try:
            try:
                decoded = jwt.decode(id_token, self._key_set(), algorithms=algorithms)
            except InvalidKeyIdError:  # a key the provider added since the keys were read
                decoded = jwt.decode(id_token, self._key_set(refresh=True), algorithms=algorithms)
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {"iss": {"essential": True, "value": self.issuer}, "aud": {"essential": True, "value": self.client_id}},
                {"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
            )
            claims.validate(leeway=CLOCK_LEEWAY_S)
        except (JoseError, ValueError) as exc:
            log.warning("OIDC ID token refused: %s", exc)
            raise OidcError(f"The provider's ID token did not verify ({_why(exc)}).", status=401) from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OidcError("The provider's ID token names no subject.", status=401)
        return dict(claims)

    def _discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._fetched_at > METADATA_TTL_S:
                self._metadata = self._fetch_discovery()
                self._keys = None
                self._fetched_at = time.monotonic()
            return self._metadata

    def _fetch_discovery(self) -> dict[str, Any]:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        metadata = _get_json(url)
        if metadata.get("issuer") != self.issuer:
            # OpenID Connect Discovery: the document's issuer is exactly the one configured, or it is not this one
            raise ProviderUnavailable(
                f"The sign-in provider calls itself {metadata.get('issuer')!r}, not the configured {self.issuer!r}."
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not metadata.get(k)]
        if missing:
            raise ProviderUnavailable(f"The sign-in provider's discovery document lacks {', '.join(missing)}.")
        return metadata

    def _key_set(self, *, refresh: bool = False) -> KeySet:
        metadata = self._discovery()
        with self._lock:
            if self._keys is None or refresh:
                try:
                    self._keys = KeySet.import_key_set(_get_json(metadata["jwks_uri"]))
                except (JoseError, KeyError, TypeError) as exc:
                    raise ProviderUnavailable(f"The sign-in provider's keys are unreadable ({_why(exc)}).") from None
            return self._keys

    def _oauth_client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            # a public client (no secret) proves itself by PKCE alone
            token_endpoint_auth_method="client_secret_basic" if self._client_secret else "none",
            scope=self._scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
        )


def _get_json(url: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S, headers={"Accept": "application/json"})
        response.raise_for_status()
        data = response.json()
    except TRANSPORT_ERRORS as exc:
        log.warning("OIDC request to %s failed: %s", url, exc)
        raise ProviderUnavailable("The sign-in provider did not answer: try again later.") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"The sign-in provider's answer at {url} is not a JSON object.")
    return data


def _why(exc: Exception) -> str:
    return getattr(exc, "description", None) or str(exc) or type(exc).__name__
