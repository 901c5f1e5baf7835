"""Why a message was not delivered: a reason from the status, the SMTP reply code and the
diagnostic text, in the taxonomy of sisimai (the most thorough bounce classifier), and
whose fault it is.

The reasons and whose fault each is are in ``taxonomy.py``; the phrases real mail
systems write for each, in ``phrases.py``; this module weighs them against the status
and the reply. The text is cut to :data:`MAX_TEXT` first, and every pattern is bounded,
so a reason takes linear time whatever the input.
"""

import re

from .phrases import FIRST, PHRASES
from .taxonomy import ADDRESS, MAILBOX, US, Fault, Reason, fault

__all__ = ["ADDRESS", "MAILBOX", "US", "Fault", "Reason", "fault"]

MAX_TEXT = 4096  # characters of diagnostic text read: the reason is in its first lines

# RFC 3463 statuses, by subject and detail, where they name a reason by themselves.
# 5.7.1 and the bare classes (x.0.0) say little: they are decided by the text.
BY_STATUS = {
    "1.0": Reason.USERUNKNOWN,
    "1.1": Reason.USERUNKNOWN,
    "1.2": Reason.HOSTUNKNOWN,
    "1.3": Reason.USERUNKNOWN,
    "1.4": Reason.FILTERED,
    "1.6": Reason.HASMOVED,
    "1.7": Reason.REJECTED,
    "1.8": Reason.REJECTED,
    "1.9": Reason.SYSTEMERROR,
    "1.10": Reason.NOTACCEPT,
    "2.0": Reason.FILTERED,
    "2.1": Reason.FILTERED,
    "2.2": Reason.MAILBOXFULL,
    "2.3": Reason.EXCEEDLIMIT,
    "2.4": Reason.FILTERED,
    "3.0": Reason.SYSTEMERROR,
    "3.1": Reason.SYSTEMFULL,
    "3.2": Reason.NOTACCEPT,
    "3.3": Reason.SYSTEMERROR,
    "3.4": Reason.MESGTOOBIG,
    "3.5": Reason.SYSTEMERROR,
    "4.0": Reason.NETWORKERROR,
    "4.1": Reason.EXPIRED,
    "4.2": Reason.NETWORKERROR,
    "4.3": Reason.SYSTEMERROR,
    "4.4": Reason.HOSTUNKNOWN,
    "4.5": Reason.SYSTEMFULL,
    "4.6": Reason.NETWORKERROR,
    "4.7": Reason.EXPIRED,
    "4.8": Reason.NETWORKERROR,
    "5.2": Reason.SYNTAXERROR,
    "5.3": Reason.TOOMANYCONN,
    "5.4": Reason.SYSTEMERROR,
    "5.5": Reason.SYSTEMERROR,
    "5.6": Reason.SYNTAXERROR,
    "7.13": Reason.SUSPEND,
    "7.16": Reason.MESGTOOBIG,
    "7.17": Reason.HASMOVED,
    "7.18": Reason.HASMOVED,
    "7.20": Reason.AUTHFAILURE,
    "7.21": Reason.AUTHFAILURE,
    "7.22": Reason.AUTHFAILURE,
    "7.23": Reason.AUTHFAILURE,
    "7.24": Reason.AUTHFAILURE,
    "7.25": Reason.REQUIREPTR,
    "7.26": Reason.AUTHFAILURE,
    "7.27": Reason.NOTACCEPT,
    "7.28": Reason.SPAMDETECTED,
    "7.29": Reason.AUTHFAILURE,
    "7.30": Reason.FAILEDSTARTTLS,
}
# 4.x.x statuses that differ from their 5.x.x twins.
BY_TEMPORARY_STATUS = {
    "1.0": None,  # a directory lookup that failed for now says nothing of the address
    "1.1": None,
    "2.1": Reason.BLOCKED,
    "4.4": Reason.NETWORKERROR,
    "4.7": Reason.EXPIRED,
    "7.1": Reason.BLOCKED,
    "7.2": Reason.BLOCKED,
}


# Statuses precise enough to outweigh any words (5.2.2 is a full mailbox, whatever
# else the diagnostic repeats).
STATUS_FIRST = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.MESGTOOBIG,
        Reason.EXCEEDLIMIT,
        Reason.SUSPEND,
        Reason.HASMOVED,
        Reason.AUTHFAILURE,
        Reason.REQUIREPTR,
        Reason.FAILEDSTARTTLS,
    }
)
# When the status says the address is unknown, only these words outweigh it.
OVER_ADDRESS_STATUS = (
    Reason.MAILBOXFULL,
    Reason.SUSPEND,
    Reason.NORELAYING,
    Reason.AUTHFAILURE,
    Reason.SPAMDETECTED,
    Reason.POLICYVIOLATION,
    Reason.REJECTED,
    Reason.BLOCKED,
    Reason.REQUIREPTR,
    Reason.BADREPUTATION,
    Reason.FILTERED,
    Reason.SPEEDING,
    Reason.TOOMANYCONN,
)

# Words that name a dead address even when said after DATA (Yahoo answers so).
STRONG_ADDRESS = re.compile(r"this user doesn't have a .{0,40} account|invalid recipient\. lpn")
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
REPLY = re.compile(r"(?<![\w.#-])([245]\d\d)(?:[ -]|$)(?!\d)")
COMMAND = re.compile(
    r"(?:in reply to|after|>>>|smtp command:?|command:|did not like our|\[|does not like)"
    r"\s*(?:the\s+)?"
    r"(rcpt[ _]to|mail[ _]from|end of data|data|helo|ehlo|connect|initial connection|recipient)\b",
)


def status_in(text: str) -> str | None:
    """The first enhanced status code (RFC 3463) in ``text``."""
    found = STATUS.search(text[:MAX_TEXT])
    return ".".join(found.groups()) if found else None


def reply_in(text: str) -> str | None:
    """The first SMTP reply code (``550``) in ``text``."""
    found = REPLY.search(text[:MAX_TEXT])
    return found.group(1) if found else None


def command_in(text: str) -> str | None:
    """The SMTP command a diagnostic says it answered (``rcpt``, ``data``, ``mail``…)."""
    found = COMMAND.findall(text[:MAX_TEXT].lower())
    if not found:
        return None
    word = found[-1]  # a transcript's last command is the one refused
    word = word.replace("_", " ")
    names = {"rcpt to": "rcpt", "recipient": "rcpt", "mail from": "mail", "end of data": "data"}
    return names.get(word, word)


def by_status(status: str | None) -> Reason | None:
    """The reason an enhanced status names by itself, if it does."""
    if not status:
        return None
    klass, _, rest = status.partition(".")
    if klass == "2":
        return Reason.DELIVERED
    if klass == "4" and rest in BY_TEMPORARY_STATUS:
        return BY_TEMPORARY_STATUS[rest]
    return BY_STATUS.get(rest)


def by_text(text: str, order=FIRST) -> Reason | None:
    """The first reason, in ``order``, whose phrases ``text`` (lower case) holds."""
    for reason in order:
        if PHRASES[reason].search(text):
            return reason
    return None


def reason_of(
    status: str | None,
    reply: str | None = None,
    text: str = "",
    action: str | None = None,
    command: str | None = None,
) -> Reason:
    """Why a recipient failed, from what a report or a relay said of it: the enhanced
    ``status`` (5.1.1), the SMTP ``reply`` code (550), the diagnostic ``text``, the
    DSN's ``action`` (failed, delayed) and the SMTP ``command`` refused (rcpt, data…)."""
    lowered = " ".join(text[:MAX_TEXT].lower().split())
    status = status or status_in(lowered)
    reply = reply or reply_in(lowered)
    command = command or command_in(lowered)
    if (status or "").startswith("2") or action in ("delivered", "relayed", "expanded"):
        return Reason.DELIVERED
    if lowered.startswith("x-unix") or lowered.startswith("x-local"):
        return Reason.MAILERERROR  # a local delivery program failed: not the address
    early = command in ("mail", "helo", "ehlo", "connect")
    named = by_status(status)
    if named in STATUS_FIRST:
        return named
    if named is Reason.FILTERED and PHRASES[Reason.USERUNKNOWN].search(lowered):
        # "User unknown" with a mailbox status (5.2.1): the address when it answered RCPT,
        # else a filter's words for a recipient it will not take.
        return Reason.USERUNKNOWN if command == "rcpt" else Reason.FILTERED
    if named in ADDRESS and named is not Reason.HOSTUNKNOWN and not early:
        # 5.1.1 is the address, unless the words say a filter or a block used it.
        return by_text(lowered, OVER_ADDRESS_STATUS) or named
    found = by_text(lowered)
    if found in ADDRESS and early:
        found = Reason.REJECTED  # before RCPT the recipient was not even named
    elif (
        found is Reason.USERUNKNOWN
        and (command == "data" or (command != "rcpt" and (status or "")[1:3] == ".7"))
        and not STRONG_ADDRESS.search(lowered)
    ):
        # "User unknown" after the message, or under a security status (5.7.1) that
        # no answer to RCPT explains: a filter's verdict, not the mailbox's.
        found = Reason.FILTERED
    if found is not None:
        return found
    if named is not None:
        # Before RCPT the recipient was not even named: a refusal of the sender.
        return Reason.REJECTED if named in ADDRESS and early else named
    subject = (status or "")[:3]
    if subject in ("5.6", "4.6"):
        return Reason.CONTENTERROR
    if subject in ("5.7", "4.7"):
        return Reason.SECURITYERROR
    if action == "delayed":
        return Reason.EXPIRED
    if command in ("helo", "ehlo", "connect"):
        return Reason.BLOCKED
    if lowered.strip() or status or reply:
        return Reason.ONHOLD
    return Reason.UNDEFINED
