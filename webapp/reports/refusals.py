"""Refusals of us, by receiving domain: what a provider that blocks our sending IP or
filters our mail looks like from here. They are never counted against the readers (see
``subscribers.suppression``); they are counted against the send, so staff see them and
mend the relay or the DNS.
"""

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..mailout.models import Delivery, DeliveryStatus
from ..models import Subscriber

# A domain refusing more than this share of its readers is blocking us, not them;
# below MIN_REFUSALS a share says nothing (one reader of two is 50 %).
WARN_SHARE = 0.03
MIN_REFUSALS = 3


@dataclass(frozen=True)
class DomainRefusals:
    """One receiving domain's refusals of an issue."""

    domain: str
    refused: int  # deliveries it refused, at send time or in a report heard back
    readers: int  # the issue's deliveries to that domain
    reasons: dict[str, int]  # sisimai's reason -> refusals

    @property
    def share(self) -> float:
        """Refused of the domain's readers."""
        return self.refused / self.readers if self.readers else 0.0

    def line(self) -> str:
        """``outlook.com: 120 of 2,000 readers (6.0 %) refused: blocked 118, spamdetected 2``."""
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in self.reasons.items())
        return (
            f"{self.domain}: {self.refused:,} of {self.readers:,} readers "
            f"({100 * self.share:.1f} %) refused: {reasons}"
        )


def refusals_by_domain(session: Session, issue_id: int) -> list[DomainRefusals]:
    """The domains that refused the issue, most refusals first."""
    refused: dict[str, Counter] = {}
    query = (
        select(Subscriber.email, Delivery.feedback_reason)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.issue_id == issue_id, Delivery.feedback == "refused")
    )
    for email, reason in session.execute(query):
        refused.setdefault(_domain(email), Counter())[reason or "undefined"] += 1
    if not refused:
        return []
    # The refusing domains' readers, in one pass over the issue's addresses: a query per
    # domain would scan the deliveries once for each of hundreds of domains.
    readers: Counter = Counter()
    everyone = (
        select(Subscriber.email)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.issue_id == issue_id, Delivery.status != DeliveryStatus.SKIPPED)
    )
    for email in session.scalars(everyone.execution_options(yield_per=5000)):
        if (domain := _domain(email)) in refused:
            readers[domain] += 1
    found = [
        DomainRefusals(domain, reasons.total(), readers[domain], dict(reasons.most_common()))
        for domain, reasons in refused.items()
    ]
    return sorted(found, key=lambda d: (-d.refused, d.domain))


def _domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def blocking(session: Session, issue_id: int) -> list[DomainRefusals]:
    """The domains refusing more than WARN_SHARE of their readers of the issue: the sign
    that a provider blocks us."""
    return [
        found
        for found in refusals_by_domain(session, issue_id)
        if found.refused >= MIN_REFUSALS and found.share > WARN_SHARE
    ]
