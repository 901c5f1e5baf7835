"""Sisimai's corpus of real bounces through ``newsletter inbound process``: the classifier
scored against go-sisimai's labels, and nobody changed by mail that is not ours."""

import re

import pytest
from sqlalchemy import select

from emails.addresses import InvalidAddress, normalize_address
from tests.bounce_corpus import MESSAGES, Score, samples
from tests.helpers import count, make_app
from webapp.db import session_factory
from webapp.inbound.classify import classify
from webapp.mailout.verp import Verp
from webapp.models import Subscriber, Subscription, SubscriptionEvent

MAIL_FROM = "letters@newsroom.org"

# Issue 26's acceptance figures, on the totals of the labelled corpus: a wrong hard
# bounce drops a good reader for good, so those are held lowest; a missed one only
# costs a few more sends until the score catches it.
MAX_WRONG_HARD = 0.02  # of the bounces that are not the address failing
MIN_HARD_FOUND = 0.95  # of the address-failed bounces (userunknown, hostunknown, ...)
MIN_COMPLAINTS_FOUND = 0.95  # of the ARF complaints
MIN_RECOGNIZED = 0.90  # not the address, said soft-bounce, refused or delayed

# Where the corpus names the failed or complaining address: DSN and ARF fields.
NAMED_ADDRESS = re.compile(
    rb"^(?:Final-Recipient|Original-Rcpt-To|Removal-Recipient):[ \t]*(?:rfc822;)?[ \t]*"
    rb"<?([^\s<>;@]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?",
    re.MULTILINE | re.IGNORECASE,
)


def corpus_addresses(files) -> list[str]:
    """The addresses the corpus's reports name that could be readers (the sign-up
    checks refuse the rest, example.com and its like), lower-cased, first seen first."""
    found: dict[str, None] = {}
    for path in files:
        for address in NAMED_ADDRESS.findall(path.read_bytes()):
            try:
                normalize_address(address.decode())
            except (InvalidAddress, UnicodeDecodeError):
                continue
            found.setdefault(address.decode().lower())
    return list(found)


def readers_state(app) -> tuple[dict, dict, int]:
    """Everything the corpus must not change: each reader's suppression and bounce
    score, each subscription's status, and how many events the history holds."""
    with session_factory(app)() as session:
        query = select(Subscriber.email, Subscriber.suppressed_at, Subscriber.bounce_score)
        subscribers = {email: rest for email, *rest in session.execute(query)}
        query = select(Subscription.id, Subscription.status)
        subscriptions = {key: status for key, status in session.execute(query)}
    return subscribers, subscriptions, count(app, SubscriptionEvent)


def test_the_corpus_is_classified_as_labelled_and_changes_no_reader(tmp_path):
    corpus = samples()
    files = [sample.path for sample in corpus]
    app = make_app(tmp_path, MAIL_FROM=MAIL_FROM)
    runner = app.test_cli_runner()
    # Readers with the very addresses the bounces and complaints name: none of these
    # messages carries our VERP token, so none of them may touch a reader, even one
    # whose address it gives (anyone can send us a bounce naming any address).
    addresses = corpus_addresses(files)
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "".join(f"{address}\n" for address in addresses))
    imported = runner.invoke(
        args=["subscribers", "import", str(csv), "--newsletter", "explaining-ukraine"]
        + ["--confirmed", "--consent-note", "bounce corpus test"]
    )
    assert imported.exit_code == 0, imported.output
    before = readers_state(app)
    assert len(before[0]) >= 100, "the corpus's addresses were not imported as readers"

    result = runner.invoke(args=["inbound", "process", *map(str, files)])

    # No message may crash the command: one line each, in order, and no failed action.
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if re.match(r"\d+\t", line)]
    assert len(lines) == len(files), result.output[-2000:]
    failed = [
        f"{path.name}: {line}"
        for path, line in zip(files, lines, strict=True)
        if "\tfailed:" in line
    ]
    assert not failed, "\n".join(failed)

    scores = {"lhost": Score(), "other": Score(), "all": Score()}
    for sample, line in zip(corpus, lines, strict=True):
        kind = line.split("\t", 2)[1]
        scores[sample.group].add(sample, kind)
        scores["all"].add(sample, kind)
    print(f"\nsisimai corpus, {len(corpus)} labelled messages:")  # pytest -s shows these
    for group, score in scores.items():
        print("\n".join([f"  {group}:"] + [f"    {line}" for line in score.lines()]))

    total = scores["all"]
    problems = []
    if total.wrong_hard > MAX_WRONG_HARD * total.rest:
        problems.append(f"wrong hard above {MAX_WRONG_HARD:.0%}")
    if total.gone_found < MIN_HARD_FOUND * total.gone:
        problems.append(f"hard bounces found below {MIN_HARD_FOUND:.0%}")
    if total.complaints_found < MIN_COMPLAINTS_FOUND * total.complaints:
        problems.append(f"complaints found below {MIN_COMPLAINTS_FOUND:.0%}")
    if total.recognized < MIN_RECOGNIZED * total.rest:
        problems.append(f"not the address, recognized below {MIN_RECOGNIZED:.0%}")
    after = readers_state(app)
    if after != before:
        changed = sorted(email for email, state in after[0].items() if before[0][email] != state)
        ended = [key for key, status in after[1].items() if before[1][key] != status]
        problems.append(
            f"token-less mail changed {len(changed)} reader(s) ({', '.join(changed[:10])}), "
            f"{len(ended)} subscription(s), {after[2] - before[2]} history event(s)"
        )
    assert not problems, "\n".join(problems + total.lines() + ["misses:"] + total.misses)


@pytest.mark.parametrize(
    ("name", "failed"),
    [
        # "please contact <support@...>" comes before the recipient it is about.
        ("lhost-postfix-07.eml", ["kijitora@user.example.or.jp"]),
        ("lhost-postfix-49.eml", ["kijitora-neko-nyaan@ntt.example.ne.jp"]),
        # The returned original's Message-ID and sender are not recipients.
        ("lhost-messagingserver-03.eml", ["sabineko@example.org"]),
        ("lhost-zoho-03.eml", ["shironeko@example.org"]),
        ("lhost-zoho-02.eml", ["mikeneko@example.co.jp", "sabineko@example.co.jp"]),
        # "from <sender>" and the original's To: header come before the failed address.
        ("lhost-x1-01.eml", ["kijitora@example.co.jp"]),
        ("lhost-exchange2003-04.eml", ["kijitora@example.com"]),
        ("lhost-v5sendmail-05.eml", ["kijitora@example.edu"]),
    ],
)
def test_a_bounce_in_words_names_the_recipient_that_failed(name, failed):
    """The address a bounce without a DSN is about: the one a probe would go to."""
    verp = Verp("key", "bounces@newsroom.org")
    report = classify((MESSAGES / name).read_bytes(), None, verp, MAIL_FROM)
    assert [verdict.address for verdict in report.verdicts] == failed


def test_words_far_before_an_address_on_its_line_do_not_hide_it():
    # "contact" 400 characters before the failed address, on the same long line, is
    # not about it: only the words just before an address say what it is.
    words = "x " * 70 + "Delivery failed; please contact your administrator. " + "y " * 200
    raw = (
        "From: MAILER-DAEMON@mx.newsroom.org\nSubject: Undelivered Mail Returned to Sender\n"
        f"\n{words}<reader@newsroom.org>: 550 5.1.1 user unknown\n"
    ).encode()
    report = classify(raw, None, Verp("key", "bounces@newsroom.org"), MAIL_FROM)
    assert [verdict.address for verdict in report.verdicts] == ["reader@newsroom.org"]
