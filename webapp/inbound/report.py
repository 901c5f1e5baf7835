"""What a message or a relay's webhook says about one of our readers, whatever the way
it came: the one shape the classifier, the webhooks and the acting share."""

import enum
from dataclasses import dataclass


class ReportKind(enum.StrEnum):
    """What an inbound message or webhook event is."""

    HARD_BOUNCE = "hard-bounce"  # the address cannot take mail (5.x.x: no such user, domain)
    SOFT_BOUNCE = "soft-bounce"  # not now (4.x.x, delay, mailbox full, greylisting)
    COMPLAINT = "complaint"  # marked as spam (ARF, a relay's complaint event)
    UNSUBSCRIBE = "unsubscribe"  # the List-Unsubscribe mailto, or a relay's unsubscribe event
    AUTO_REPLY = "auto-reply"  # vacation, out of office, RFC 3834 auto-submitted
    REPLY = "reply"  # a reader wrote back
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Report:
    """One thing heard about one reader (or about nobody we know, for replies and garbage).

    ``token`` is our signed VERP token when the report carries one (the ``TOKEN`` of
    ``bounces+TOKEN@domain``, or a relay's copy of it); ``address`` is the reader's
    address when known; ``code`` the status (``5.1.1``, ``550``) when given; ``detail``
    one line for staff.
    """

    kind: ReportKind
    address: str | None = None
    token: str | None = None
    code: str | None = None
    detail: str = ""
