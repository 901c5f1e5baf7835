"""The erased addresses: only a keyed hash is kept of each, so that an import never
adds one back (the erasure itself is in ``privacy/``)."""

import hashlib
import hmac


def erased_digest(address_key: str, secret_key: str) -> str:
    """The keyed hash kept of an erased address (HMAC-SHA256 of its case-folded form)."""
    key = hmac.new(secret_key.encode(), b"newsletter.erased", hashlib.sha256).digest()
    return hmac.new(key, address_key.encode(), hashlib.sha256).hexdigest()
