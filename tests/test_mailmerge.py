"""Mail merge and DKIM: what a reader's client decodes is exactly what was rendered."""

from email import message_from_bytes, policy
from urllib.parse import quote

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from emails.dkim import DkimError, Signer, canonical_body, canonical_header
from emails.mailmerge import HeaderError, MergeTemplate, fold
from emails.slots import Slotted
from tests.helpers import dkim_key
from webapp.mailout.relay import list_unsubscribe

# Text as templates and articles make it: any line ends, leading dots, trailing
# spaces, long lines, "=" and non-Latin text.
BODY_TEXT = st.lists(
    st.sampled_from(list('ab =.\t\r\nКиїв’<>&"') + ["x" * 90, "\n.\n", "\nFrom ", " \n"]),
    max_size=120,
).map("".join)

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out
LINKS = {"unsubscribe_url": "https://news.test/u/a.b-c_d", "manage_url": "https://news.test/m/x"}


def template(text: str, html: str, subject: str = "Subject") -> MergeTemplate:
    return MergeTemplate(
        subject=subject,
        sender="letters@news.test",
        sender_name="The News, Kyiv",
        text=Slotted((text, "unsubscribe_url", "\n"), html=False),
        html=Slotted((html, "manage_url", "</p>"), html=True),
        headers={"List-Id": "<daily.news.test>", "Precedence": "bulk"},
    )


def parse(raw: bytes):
    return message_from_bytes(raw, policy=policy.default)


def crlf_to_lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=200, deadline=None)
@given(text=BODY_TEXT, html=BODY_TEXT, subject=st.text(min_size=1, max_size=120))
def test_every_part_decodes_to_the_filled_text(text, html, subject):
    subject = " ".join(subject.split()) or "x"  # a header is one line, by the form's rules
    raw = template(text, html, subject).merge("reader@news.test", LINKS, {})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))  # RFC 2045 encoded lines
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as on the wire
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["To"] == "reader@news.test"
    plain = msg.get_body(("plain",)).get_content()
    assert crlf_to_lf(plain) == crlf_to_lf(text + LINKS["unsubscribe_url"] + "\n")
    html_part = msg.get_body(("html",)).get_content()
    assert crlf_to_lf(html_part) == crlf_to_lf(html + LINKS["manage_url"] + "</p>")


def test_readers_get_their_own_headers_and_links_and_nothing_else_differs():
    merge = template("Hello ", "<p>Hi ")
    one = merge.merge("one@news.test", LINKS, {"List-Unsubscribe": "<https://news.test/u/1>"})
    other_links = {
        "unsubscribe_url": "https://news.test/u/2",
        "manage_url": "https://news.test/m/2",
    }
    two = merge.merge("two@news.test", other_links, {"List-Unsubscribe": "<https://news.test/u/2>"})
    first, second = parse(one), parse(two)
    assert first["Message-ID"] != second["Message-ID"]
    assert first["List-Unsubscribe"] == "<https://news.test/u/1>"
    assert "https://news.test/u/2" in second.get_body(("plain",)).get_content()
    assert first["From"] == '"The News, Kyiv" <letters@news.test>'
    assert first["Date"] and first["MIME-Version"] == "1.0"


def test_non_latin_text_travels_in_base64_and_latin_in_quoted_printable():
    cyrillic = template("Київ " * 200, "<p>Київ " * 200)
    latin = template("Kyiv " * 200, "<p>Kyiv " * 200)
    assert b"Content-Transfer-Encoding: base64" in cyrillic.merge("a@news.test", LINKS, {})
    assert b"Content-Transfer-Encoding: quoted-printable" in latin.merge("a@news.test", LINKS, {})


def test_header_values_are_folded_and_injection_is_refused():
    line = fold("List-Unsubscribe", "<https://news.test/" + "u" * 80 + ">, <mailto:x@news.test>")
    assert line.endswith(b"\r\n") and b",\r\n <mailto:" in line
    for bad in ("a@news.test\r\nBcc: victim@news.test", "читач@news.test"):
        with pytest.raises(HeaderError):
            fold("To", bad)


@pytest.fixture(scope="module")
def signer_and_record(tmp_path_factory):
    path, record = dkim_key(tmp_path_factory.mktemp("dkim"))
    return Signer(domain="news.test", selector="s1", private_key=path.read_bytes()), record


@settings(max_examples=60, deadline=None)
@given(text=BODY_TEXT, html=BODY_TEXT, subject=st.text(min_size=1, max_size=200))
def test_dkimpy_verifies_every_signature(signer_and_record, text, html, subject):
    signer, record = signer_and_record
    subject = " ".join(subject.split()) or "x"
    raw = template(text, html, subject).merge(
        "reader@news.test", LINKS, {"List-Unsubscribe": "<https://news.test/u/1>"}
    )
    signed = signer.sign(raw)

    def dns(name, timeout=5):
        assert name == b"s1._domainkey.news.test."
        return record

    assert dkim.verify(signed, dnsfunc=dns)
    for before, after in [
        (b"<https://news.test/u/1>", b"<https://evil.test/u/1>"),  # a header changed
        (b"\r\nFrom: ", b'\r\nFrom: "x" <x@evil.test>\r\nFrom: '),  # a From added
        (b"Content-Type: text/html", b"Content-Type: text/html\r\nX: y"),  # the body changed
    ]:
        assert not dkim.verify(signed.replace(before, after, 1), dnsfunc=dns)


def test_relaxed_body_canonicalization_follows_the_rfc_examples():
    # RFC 6376 section 3.4.6: " C \r\nD \t E\r\n\r\n\r\n" becomes " C\r\nD E\r\n".
    assert canonical_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert canonical_body(b"") == b""
    assert canonical_body(b"\r\n\r\n") == b""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"a", b"  ", b"\r\n\r\n"])).map(b"".join))
def test_body_canonicalization_agrees_with_dkimpy(body):
    assert canonical_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n ", b"a", b"b:", b"\r\n\t"])).map(b"".join))
def test_header_canonicalization_agrees_with_dkimpy(value):
    [(name, expected)] = Relaxed.canonicalize_headers([(b"Subject", b"x" + value)])
    assert canonical_header(b"Subject:x" + value + b"\r\n") == name + b":" + expected


def test_a_key_that_cannot_sign_is_refused_with_a_reason():
    with pytest.raises(DkimError, match="cannot read"):
        Signer(domain="news.test", selector="s1", private_key=b"not a key")
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(DkimError, match="not an RSA"):
        Signer(domain="news.test", selector="s1", private_key=ed)


@pytest.mark.parametrize(
    "token", ["eyJ1IjoxfQ.ZmFrZQ.c2ln-_", "odd token?with&chars%"], ids=["token", "other"]
)
def test_the_list_unsubscribe_mailto_quotes_as_urllib_does(token):
    value = list_unsubscribe("letters@newsroom.org", f"https://newsroom.org/unsubscribe/{token}")
    assert value.endswith(f"?subject={quote('unsubscribe ' + token)}>")
