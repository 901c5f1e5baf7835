"""Sisimai's reasons (its names, so figures compare) and whose fault each one is.

Only four reasons mean the address itself is gone (:data:`ADDRESS`); a full mailbox, a
queue that gave up, a spam filter or a block of our sending IP are not the reader's
doing, and :func:`fault` says so.
"""

import enum


class Reason(enum.StrEnum):
    """Sisimai's reasons (its names, so figures compare)."""

    USERUNKNOWN = "userunknown"
    HOSTUNKNOWN = "hostunknown"
    HASMOVED = "hasmoved"
    NOTACCEPT = "notaccept"
    MAILBOXFULL = "mailboxfull"
    EXCEEDLIMIT = "exceedlimit"
    SUSPEND = "suspend"
    EXPIRED = "expired"
    SYSTEMERROR = "systemerror"
    SYSTEMFULL = "systemfull"
    NETWORKERROR = "networkerror"
    MAILERERROR = "mailererror"
    TOOMANYCONN = "toomanyconn"
    ONHOLD = "onhold"
    BLOCKED = "blocked"
    BADREPUTATION = "badreputation"
    SPAMDETECTED = "spamdetected"
    FILTERED = "filtered"
    REJECTED = "rejected"
    POLICYVIOLATION = "policyviolation"
    AUTHFAILURE = "authfailure"
    REQUIREPTR = "requireptr"
    NORELAYING = "norelaying"
    SECURITYERROR = "securityerror"
    CONTENTERROR = "contenterror"
    VIRUSDETECTED = "virusdetected"
    MESGTOOBIG = "mesgtoobig"
    SYNTAXERROR = "syntaxerror"
    NOTCOMPLIANTRFC = "notcompliantrfc"
    FAILEDSTARTTLS = "failedstarttls"
    SPEEDING = "speeding"
    VACATION = "vacation"
    FEEDBACK = "feedback"
    DELIVERED = "delivered"
    UNDEFINED = "undefined"


class Fault(enum.StrEnum):
    """Whose doing a failure is, which decides what is done about it."""

    ADDRESS = "address"  # the address is gone: suppress at once
    MAILBOX = "mailbox"  # there, but cannot take mail now: the soft score
    US = "us"  # the receiving system refused us: never the reader's fault
    NONE = "none"  # not a failure, or nothing known: change nothing


ADDRESS = frozenset({Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED, Reason.NOTACCEPT})
MAILBOX = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.EXCEEDLIMIT,
        Reason.SUSPEND,
        Reason.EXPIRED,
        Reason.SYSTEMERROR,
        Reason.SYSTEMFULL,
        Reason.NETWORKERROR,
        Reason.MAILERERROR,
        Reason.TOOMANYCONN,
        Reason.ONHOLD,
    }
)
US = frozenset(
    {
        Reason.BLOCKED,
        Reason.BADREPUTATION,
        Reason.SPAMDETECTED,
        Reason.FILTERED,
        Reason.REJECTED,
        Reason.POLICYVIOLATION,
        Reason.AUTHFAILURE,
        Reason.REQUIREPTR,
        Reason.NORELAYING,
        Reason.SECURITYERROR,
        Reason.CONTENTERROR,
        Reason.VIRUSDETECTED,
        Reason.MESGTOOBIG,
        Reason.SYNTAXERROR,
        Reason.NOTCOMPLIANTRFC,
        Reason.FAILEDSTARTTLS,
        Reason.SPEEDING,
    }
)


def fault(reason: Reason | str | None) -> Fault:
    """Whose doing ``reason`` is."""
    if reason in ADDRESS:
        return Fault.ADDRESS
    if reason in MAILBOX:
        return Fault.MAILBOX
    if reason in US:
        return Fault.US
    return Fault.NONE
