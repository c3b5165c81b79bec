"""Bearer tokens for a service: JWTs (HS256) signed with the service's secret, with an expiry.

`conveyor token NAME` issues them; the gateway checks them. A token names its service in `sub`,
so services that share a secret (`--token-secret-env`) still do not accept each other's tokens.
"""

from __future__ import annotations

import secrets
import time

import jwt

ALGORITHM = "HS256"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def issue_token(secret: str, service: str, lifetime_s: float) -> str:
    issued = int(time.time())
    claims = {"sub": service, "iat": issued, "exp": issued + max(1, int(lifetime_s))}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Checks `Authorization` header values.

    PyJWT compares signatures in constant time; a token that passed is remembered until it
    expires, so each token's signature is checked once rather than on every request.
    """

    def __init__(self, secret: str, service: str, remember: int = 4096):
        self._secret = secret
        self._service = service
        self._remember = remember
        self._passed: dict[bytes, float] = {}  # header value -> expiry (unix time)

    def allows(self, header: bytes | None) -> bool:
        if not header:
            return False
        expiry = self._passed.get(header)
        if expiry is not None:
            if expiry > time.time():
                return True
            del self._passed[header]
            return False
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return False
        try:
            claims = jwt.decode(token.strip().decode("ascii", "replace"), self._secret,
                                algorithms=[ALGORITHM], subject=self._service,
                                options={"require": ["exp", "sub"]})
        except jwt.InvalidTokenError:
            return False
        if len(self._passed) >= self._remember:
            self._passed.clear()
        self._passed[header] = float(claims["exp"])
        return True
