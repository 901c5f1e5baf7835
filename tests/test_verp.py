"""VERP: each message's envelope sender names it; a forged or altered token names nothing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webapp.mailout.verp import Verp, bounce_address

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out

VERP = Verp("test-secret", "bounces@newsroom.org")


@given(st.sampled_from(["d", "o"]), st.integers(min_value=1, max_value=2**63 - 1))
def test_a_token_names_its_message_in_any_case(kind, row_id):
    sender = VERP.sender(kind, row_id)
    local = sender.partition("@")[0]
    assert sender.endswith("@newsroom.org") and len(local) <= 64  # RFC 5321's limit
    assert VERP.read(sender) == (kind, row_id)
    assert VERP.read(sender.upper()) == (kind, row_id)  # some relays change the case
    assert VERP.read(f"<{sender}>") == (kind, row_id)


def test_forged_altered_and_foreign_tokens_name_nothing():
    sender = VERP.sender("d", 1234)
    token = sender.partition("+")[2].partition("@")[0]
    assert Verp("another-secret", "bounces@newsroom.org").read(sender) is None
    assert VERP.read(sender.replace(token, "d" + token[1:].replace("y", "z"))) is None
    assert VERP.read(sender.replace("+d", "+o")) is None  # the same id as another kind
    assert VERP.read(f"bounces+d{token[1:4]}1-{'a' * 13}@newsroom.org") is None
    for text in ("", "bounces@newsroom.org", "reader@newsroom.org", "+@", "bounces+d1-@x"):
        assert VERP.read(text) is None


def test_the_bounce_address_defaults_to_bounces_at_the_senders_domain():
    assert bounce_address({"MAIL_FROM": "letters@newsroom.org"}) == "bounces@newsroom.org"
    config = {"MAIL_FROM": "letters@newsroom.org", "BOUNCE_ADDRESS": "dsn@mx.newsroom.org"}
    assert bounce_address(config) == "dsn@mx.newsroom.org"
    assert VERP.is_bounce_address("Bounces+d1-abc@NewsRoom.org")
    assert VERP.is_bounce_address("bounces@newsroom.org")
    assert not VERP.is_bounce_address("bouncesx@newsroom.org")
    assert not VERP.is_bounce_address("bounces@elsewhere.org")
