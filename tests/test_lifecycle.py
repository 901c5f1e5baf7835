"""One address's life, as a Hypothesis state machine: sign-ups, confirmations, every way
of leaving, imports with and without opt-outs, erasure. Its history only grows (until
erasure removes it), and the subscription's state is always its last event's."""

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from tests.helpers import csrf_token, make_app, press_confirm, subscribe
from webapp.db import session_factory
from webapp.links import confirm_token, manage_url, unsubscribe_url
from webapp.models import EventKind, Subscriber, Subscription, SubscriptionStatus

NEWSLETTER = "explaining-ukraine"
STATE_OF = {
    EventKind.SUBSCRIBED: SubscriptionStatus.PENDING,
    EventKind.RESUBSCRIBED: SubscriptionStatus.PENDING,
    EventKind.CONFIRMED: SubscriptionStatus.CONFIRMED,
    EventKind.UNSUBSCRIBED: SubscriptionStatus.UNSUBSCRIBED,
}


def test_an_address_life_keeps_its_history(tmp_path):
    app = make_app(tmp_path)
    addresses = (f"life{n}@newsroom.org" for n in itertools.count())

    class Life(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.email = next(addresses)
            self.client = app.test_client()
            self.seen: list[int] = []  # event ids so far, oldest first
            self.imports = 0

        def subscription(self, session) -> Subscription | None:
            return session.scalar(
                select(Subscription)
                .join(Subscription.subscriber)
                .where(Subscriber.email == self.email, Subscription.newsletter.has(slug=NEWSLETTER))
            )

        def path(self, make) -> str | None:
            with app.app_context(), session_factory(app)() as session:
                subscription = self.subscription(session)
                if subscription is None:
                    return None
                return make(subscription).split("://", 1)[1].split("/", 1)[1]

        @rule()
        def sign_up(self):
            assert subscribe(self.client, self.email, NEWSLETTER, json=True).json["ok"]

        @rule()
        def confirm(self):
            path = self.path(lambda s: "x://h/confirm/" + confirm_token(s.id, s.confirm_nonce))
            if path is None:
                return
            page = self.client.get("/" + path)
            if 'name="csrf_token"' in page.get_data(as_text=True):  # pending: the button
                assert press_confirm(self.client, "/" + path).status_code == 302
            else:  # confirmed, or ended since: a notice
                assert page.status_code in (200, 410)

        @rule(how=st.sampled_from(["page", "one-click"]))
        def unsubscribe(self, how):
            path = self.path(unsubscribe_url)
            if path is not None:
                data = {"via": "page"} if how == "page" else {"List-Unsubscribe": "One-Click"}
                assert self.client.post("/" + path, data=data).status_code == 200

        @rule(action=st.sampled_from(["subscribe", "leave", "leave-all"]))
        def manage(self, action):
            path = self.path(lambda s: manage_url(s.subscriber))
            if path is not None:
                data = {"action": action, "newsletter": NEWSLETTER}
                data["csrf_token"] = csrf_token(self.client, "/" + path)
                assert self.client.post("/" + path, data=data).status_code == 302

        @rule(opt_out=st.booleans(), confirmed=st.booleans())
        def import_list(self, opt_out, confirmed):
            self.imports += 1
            path = tmp_path / f"{self.email}-{self.imports}.csv"
            path.write_text(f"email,status\n{self.email},{'blocklisted' if opt_out else 'on'}\n")
            options = ["--confirmed", "--consent-note", "CRM"] if confirmed else []
            result = app.test_cli_runner().invoke(
                args=["subscribers", "import", str(path), "--newsletter", NEWSLETTER, *options]
            )
            assert result.exit_code == 0, result.output

        @rule()
        def erase(self):
            result = app.test_cli_runner().invoke(args=["subscribers", "delete", self.email])
            assert result.exit_code == 0, result.output
            self.seen = []  # erasure removes the history, and only then

        @invariant()
        def history_grows_and_the_state_is_the_last_event(self):
            with session_factory(app)() as session:
                subscription = self.subscription(session)
                if subscription is None:
                    assert self.seen == []
                    return
                events = subscription.events
                ids = [e.id for e in events]
                assert ids[: len(self.seen)] == self.seen, "an event was changed or removed"
                self.seen = ids
                last = [e.kind for e in events if e.kind in STATE_OF][-1]
                assert subscription.status == STATE_OF[last]

    run_state_machine_as_test(
        Life,
        settings=settings(
            max_examples=50,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
