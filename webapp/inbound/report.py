"""What a message or a relay's webhook says about one of our readers, whatever the way
it came: the one shape the classifier, the webhooks and the acting share."""

import enum
from dataclasses import dataclass

from emails.reasons import (
    MAX_TEXT,
    Fault,
    Reason,
    fault,
    reason_of,
    reply_in,
    status_in,
)


class ReportKind(enum.StrEnum):
    """What an inbound message or webhook event is."""

    HARD_BOUNCE = "hard-bounce"  # the address is gone (no such user, no such domain)
    SOFT_BOUNCE = "soft-bounce"  # the mailbox cannot take mail now (full, queue gave up)
    REFUSED = "refused"  # the receiving system refused us (a block, a spam filter, policy)
    DELAYED = "delayed"  # a DSN whose action is "delayed": news, not a bounce
    COMPLAINT = "complaint"  # marked as spam (ARF, a relay's complaint event)
    UNSUBSCRIBE = "unsubscribe"  # the List-Unsubscribe mailto, or a relay's unsubscribe event
    AUTO_REPLY = "auto-reply"  # vacation, out of office, RFC 3834 auto-submitted
    REPLY = "reply"  # a reader wrote back
    UNKNOWN = "unknown"


BOUNCES = (ReportKind.HARD_BOUNCE, ReportKind.SOFT_BOUNCE, ReportKind.REFUSED)


@dataclass(frozen=True)
class Verdict:
    """What became of one recipient of a delivery report: its ``address``, sisimai's
    ``reason``, the enhanced ``status`` (5.1.1), the SMTP ``reply`` code (550), the DSN's
    ``action`` (failed, delayed) and one line of the ``diagnostic``."""

    address: str | None
    reason: str
    status: str | None = None
    reply: str | None = None
    action: str | None = None
    diagnostic: str = ""

    @property
    def kind(self) -> ReportKind:
        """What this recipient's failure is, by whose fault it is."""
        if self.action == "delayed":
            return ReportKind.DELAYED
        if self.reason == Reason.VACATION:
            return ReportKind.AUTO_REPLY
        if self.reason == Reason.FEEDBACK:
            return ReportKind.COMPLAINT
        who = fault(self.reason)
        if who is Fault.ADDRESS:  # a 4.1.1 reported as failed too: the queue gave up on it
            return ReportKind.HARD_BOUNCE
        if who is Fault.MAILBOX:
            return ReportKind.SOFT_BOUNCE
        if who is Fault.US:
            return ReportKind.REFUSED
        return ReportKind.UNKNOWN

    @property
    def code(self) -> str | None:
        """The status, else the reply code."""
        return self.status or self.reply

    def line(self) -> str:
        """One line for staff: ``reader@example.org: userunknown 5.1.1``."""
        parts = [self.reason, self.code or "", self.action if self.action == "delayed" else ""]
        return f"{self.address or '?'}: {' '.join(p for p in parts if p)}"


@dataclass(frozen=True)
class Report:
    """One thing heard about one reader (or about nobody we know, for replies and garbage).

    ``token`` is our signed VERP token when the report carries one (the ``TOKEN`` of
    ``bounces+TOKEN@domain``, or a relay's copy of it); ``forged`` says it carried a
    token of ours that does not verify (then it names nobody, whatever else it says);
    ``link`` a signed link of ours found in a complaint's returned original (purpose,
    token), which names its reader as a token does; ``address`` is the address the
    report writes (shown to staff: it proves nothing by itself); ``code`` the status (``5.1.1``,
    ``550``) when given; ``reason`` sisimai's reason; ``verdicts`` one per recipient of
    a delivery report; ``detail`` one line for staff.
    """

    kind: ReportKind
    address: str | None = None
    token: str | None = None
    code: str | None = None
    detail: str = ""
    reason: str | None = None
    verdicts: tuple[Verdict, ...] = ()
    forged: bool = False
    link: tuple[str, str] | None = None

    def verdict_for(self, address: str | None) -> Verdict | None:
        """The verdict about ``address`` (any case), else the report's first."""
        if address:
            for verdict in self.verdicts:
                if verdict.address and verdict.address.lower() == address.lower():
                    return verdict
        return self.verdicts[0] if self.verdicts else None


def relay_bounce(
    address: str | None,
    *,
    permanent: bool,
    status: str | None = None,
    diagnostic: str = "",
    token: str | None = None,
    reason: str | None = None,
) -> Report:
    """A relay's bounce event as a report, its reason read from the status and the
    diagnostic as a DSN's would be (``reason`` when the relay names one itself). A
    temporary one is a delay: the relay tries again, nothing counts."""
    text = " ".join((diagnostic or "").split())[:MAX_TEXT]
    enhanced = status_in(status or "") or status_in(text)
    reply = reply_in(status or "") if status and not enhanced else reply_in(text)
    action = "failed" if permanent else "delayed"
    found = reason or reason_of(enhanced, reply, text, action)
    verdict = Verdict(address, found, enhanced, reply, action, text[:300])
    return Report(
        verdict.kind,
        address=address,
        token=token,
        code=verdict.code,
        detail=f"{verdict.line()} | {text}"[:500] if text else verdict.line(),
        reason=found,
        verdicts=(verdict,),
    )
