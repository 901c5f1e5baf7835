"""One issue made into each reader's message: compiled once, then a mail merge per reader.

Part of the sending core: it takes plain settings and a link maker, never the app, so
the forked senders of a digest use it as their parent made it.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING

from emails.mailmerge import MergeTemplate
from emails.slots import Slotted

from ..mailout.relay import dkim_signer, list_id_headers, list_unsubscribe
from ..mailout.verp import Verp
from ..models import Issue

if TYPE_CHECKING:
    from ..links import ReaderLinks, Tracked

# What fills the open pixel's slot where nobody is tracked (previews, test copies).
NO_PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


class IssueMail:
    """One issue ready for any reader.

    Every reader's message carries the issue's headers, their own unsubscribe and
    manage links (in the parts and in List-Unsubscribe, naming the issue), the issue's
    links tracked for them when it was built with tracking and ``tracked`` is given
    (else the links themselves, as in previews and test copies), and a DKIM signature
    when configured.
    """

    def __init__(
        self,
        issue: Issue,
        config: Mapping,
        links: "ReaderLinks",
        tracked: "Tracked | None" = None,
    ) -> None:
        newsletter = issue.newsletter
        self.sender = config["MAIL_FROM"]
        self.template = MergeTemplate(
            subject=issue.subject,
            sender=self.sender,
            sender_name=newsletter.from_name or config["SITE_NAME"],
            text=Slotted.from_json(issue.text),
            html=Slotted.from_json(issue.html),
            headers={
                **list_id_headers(self.sender, newsletter.slug, newsletter.title),
                "Precedence": "bulk",
            },
        )
        self.links = links
        self.signer = dkim_signer(config)
        self.verp = Verp.from_config(config)
        self.issue_id, self.tracked = issue.id, tracked
        targets = (issue.content or {}).get("links", [])
        self.link_count = len(targets)
        self.opens = "open_url" in Slotted.from_json(issue.html).parts[1::2]
        # Untracked, each slot is its target (and the pixel nothing).
        self.untracked = {f"link{n}": url for n, url in enumerate(targets)}
        if self.opens:
            self.untracked["open_url"] = NO_PIXEL

    def envelope_sender(self, delivery_id: int) -> str:
        """The envelope sender of one delivery: bounces+TOKEN@, so a bounce names it."""
        return self.verp.sender("d", delivery_id)

    def message(self, recipient: str, links: dict[str, str]) -> bytes:
        """The message for ``recipient`` (an ASCII address) with these personal links."""
        raw = self.template.merge(
            recipient,
            {**self.untracked, **links},
            {"List-Unsubscribe": list_unsubscribe(self.sender, links["unsubscribe_url"])},
        )
        return raw if self.signer is None else self.signer.sign(raw)

    def for_reader(
        self, recipient: str, subscription_id: int, subscriber_id: int, secret: str
    ) -> bytes:
        """The message for one subscriber, from plain ids (no ORM objects on the hot path)."""
        links = self.links.for_reader(subscription_id, subscriber_id, secret, self.issue_id)
        if self.tracked is not None and (self.link_count or self.opens):
            links.update(
                self.tracked.for_reader(self.issue_id, subscriber_id, self.link_count, self.opens)
            )
        return self.message(recipient, links)
