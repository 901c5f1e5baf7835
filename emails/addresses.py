"""Deciding whether an address can ever receive mail, without asking DNS."""

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

# RFC 2606 and RFC 6761 names that never receive mail; email-validator already refuses
# the other special-use names (test, invalid, localhost, local, onion, arpa).
RESERVED_DOMAINS = ("example", "example.com", "example.net", "example.org")
MAX_LOCAL_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_INPUT_CHARS = 320  # longer input is refused before parsing


class InvalidAddress(ValueError):
    """The input is not an address mail can be delivered to; ``str()`` says why."""


@dataclass(frozen=True)
class Address:
    """A checked address.

    ``email`` is the normalized form shown to people (internationalized domain kept),
    ``ascii`` the form used in headers and the SMTP envelope, ``key`` the case-folded
    form duplicates are found by.
    """

    email: str
    ascii: str
    key: str


def normalize_address(raw: str) -> Address:
    """Check and normalize ``raw`` as typed into a form.

    Trims white space, normalizes the domain (internationalized domains are accepted),
    and refuses control characters, quoted or IP-literal forms, over-long local parts,
    non-ASCII local parts (they need SMTPUTF8, which relays rarely offer) and special-use
    or reserved domains. No DNS lookup is made.
    """
    text = raw.strip()
    if not text:
        raise InvalidAddress("the address is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidAddress("the address is too long")
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    if len(checked.local_part.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise InvalidAddress("the part before the @-sign is longer than 64 octets")
    if "=?" in checked.local_part and "?=" in checked.local_part:
        # RFC 2047 5: an encoded-word must not appear in an addr-spec; mail libraries that
        # decode one anyway turn it into whatever it encodes, line breaks included.
        raise InvalidAddress("the part before the @-sign holds an encoded word (=?…?=)")
    domain = checked.ascii_domain.lower()
    if any(domain == name or domain.endswith("." + name) for name in RESERVED_DOMAINS):
        raise InvalidAddress("the domain is reserved for examples and never receives mail")
    return Address(
        email=checked.normalized, ascii=checked.ascii_email, key=checked.normalized.casefold()
    )


# Providers known to deliver every dotted spelling of a local part to one inbox.
DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox(address_key: str) -> str:
    """The inbox an address reaches, for counting what is sent to it.

    ``reader+news@x.org`` and ``reader@x.org`` are one inbox (sub-addressing, RFC 5233,
    offered by most providers), and so are ``o.lena@gmail.com`` and ``olena@gmail.com``.
    Takes the case-folded key of a checked :class:`Address`.
    """
    local, _, domain = address_key.rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS:
        local, domain = local.replace(".", ""), DOTLESS[domain]
    return f"{local}@{domain}"


def ascii_address(email: str) -> str:
    """The ASCII (IDNA) form of an address already checked by :func:`normalize_address`."""
    return normalize_address(email).ascii


def envelope_address(email: str) -> str:
    """A stored address as the SMTP envelope takes it; cheap for the usual ASCII one.

    Raises InvalidAddress for one that today's rules refuse.
    """
    return email if email.isascii() else ascii_address(email)
