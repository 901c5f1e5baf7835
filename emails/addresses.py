"""Deciding whether an address can ever receive mail, without asking DNS."""

import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

import regex
from email_validator import EmailNotValidError, validate_email
from publicsuffixlist import PublicSuffixList

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
    if _root_zone().publicsuffix(domain, accept_unknown=False) is None:
        raise InvalidAddress(f"{checked.domain.rpartition('.')[2]} is not a top-level domain")
    for label in checked.domain.split("."):
        if mixes_scripts(label):
            raise InvalidAddress(f"the domain label {label!r} mixes scripts")
    if checked.ascii_email is None:  # not without SMTPUTF8: refused by validate_email above
        raise InvalidAddress("the part before the @-sign is not ASCII")
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


@cache
def _root_zone() -> PublicSuffixList:
    # The ICANN section of the Public Suffix List holds every top-level domain of the
    # root zone; the list is shipped and updated with the package.
    return PublicSuffixList(only_icann=True)


# Scripts of the world's domain names, by their Unicode names (Script_Extensions).
SCRIPTS = (
    *("Latin", "Greek", "Cyrillic", "Armenian", "Hebrew", "Arabic", "Syriac", "Thaana"),
    *("Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu"),
    *("Kannada", "Malayalam", "Sinhala", "Thai", "Lao", "Tibetan", "Myanmar", "Georgian"),
    *("Hangul", "Ethiopic", "Cherokee", "Khmer", "Mongolian", "Hiragana", "Katakana"),
    *("Bopomofo", "Han"),
)
_IN_SCRIPT = {name: regex.compile(rf"\p{{scx={name}}}") for name in SCRIPTS}
_ANY_SCRIPT = regex.compile(r"[\p{scx=Common}\p{scx=Inherited}]")
# UTS 39 augments the scripts of a character: Han is also written in Japanese (with
# Hiragana and Katakana), Korean (with Hangul) and Bopomofo-annotated Chinese.
_WRITTEN_WITH = {
    "Han": {"Jpan", "Kore", "Hanb"},
    "Hiragana": {"Jpan"},
    "Katakana": {"Jpan"},
    "Hangul": {"Kore"},
    "Bopomofo": {"Hanb"},
}


@lru_cache(maxsize=4096)
def _scripts(char: str) -> frozenset[str] | None:
    """The augmented script set of ``char``; None for Common and Inherited (any)."""
    if _ANY_SCRIPT.match(char):
        return None
    found = {name for name, pattern in _IN_SCRIPT.items() if pattern.match(char)}
    if not found:  # a script beyond the list: its own, by the character's name
        found = {unicodedata.name(char, "unknown").split()[0]}
    return frozenset(found | {w for name in found for w in _WRITTEN_WITH.get(name, ())})


def mixes_scripts(label: str) -> bool:
    """True when ``label`` is not single-script (UTS 39, 5.1: its resolved script set,
    the intersection of its characters' augmented script sets, is empty).

    ``exаmple`` with a Cyrillic ``а`` mixes Latin and Cyrillic; ``пошта``, ``東京``
    and ``ひらがな漢字`` do not.
    """
    if label.isascii():
        return False
    resolved: frozenset[str] | None = None
    for char in label:
        scripts = _scripts(char)
        if scripts is None:
            continue
        resolved = scripts if resolved is None else resolved & scripts
        if not resolved:
            return True
    return False
