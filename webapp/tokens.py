"""Signed, expiring tokens for links in mail, with one salt per purpose.

A token made for one purpose (confirm, unsubscribe, manage) is refused for another.
"""

from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenInvalid(Exception):
    """The token was tampered with, truncated, or made for another purpose."""


class TokenExpired(Exception):
    """The token was genuine but is older than its purpose allows."""


def serializer(purpose: str) -> URLSafeTimedSerializer:
    """The signer of ``purpose``'s tokens; keep it to make many tokens quickly."""
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"newsletter.{purpose}")


def make_token(purpose: str, data: Any) -> str:
    """Sign ``data`` (JSON-serializable) for ``purpose``."""
    return serializer(purpose).dumps(data)


def read_token(purpose: str, token: str, max_age: int | None = None) -> Any:
    """Return the data signed in ``token``, or raise TokenInvalid / TokenExpired."""
    try:
        return serializer(purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenExpired from None
    except BadSignature:
        raise TokenInvalid from None
