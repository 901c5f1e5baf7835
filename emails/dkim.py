"""DKIM signatures (dkimpy) over the headers receivers and list tools rely on."""

import dkim

SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]


class DkimError(ValueError):
    """The key cannot sign (unreadable, not a private key)."""


def sign(message: bytes, *, domain: str, selector: str, private_key: bytes) -> bytes:
    """The message with a ``DKIM-Signature`` header prepended (relaxed/relaxed, rsa-sha256).

    Headers of SIGNED_HEADERS that the message lacks are left out of the signature.
    """
    try:
        signature = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
        )
    except dkim.DKIMException as exc:
        raise DkimError(f"cannot sign with the DKIM key: {exc}") from None
    return signature + message
