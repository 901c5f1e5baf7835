"""Hostile input never causes a 500: property-based tests and a fuzzer over every route."""

import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from emails.addresses import InvalidAddress, normalize_address
from emails.articles import ArticleError, decode, parse_article
from tests.helpers import make_app
from webapp.db import engine
from webapp.links import (
    LinkGone,
    TokenExpired,
    TokenInvalid,
    make_token,
    read_token,
    row_for_link,
)

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ADDRESS_CHARS = string.ascii_letters + string.digits + "@.-_+\"'<>()[]\\ \t\r\n\x00é日"


@SETTINGS
@given(st.one_of(st.text(alphabet=ADDRESS_CHARS, max_size=80), st.text(max_size=400)))
def test_address_validation_accepts_or_refuses_cleanly(raw):
    try:
        address = normalize_address(raw)
    except InvalidAddress as exc:
        assert str(exc)
        return
    assert address.ascii.isascii() and "@" in address.ascii
    assert not any(ch in address.email for ch in "\r\n\x00\t ")
    again = normalize_address(address.email)
    assert again == address  # normalizing is idempotent


@SETTINGS
@given(st.emails())
def test_generated_addresses_never_crash_and_keys_fold_case(raw):
    try:
        address = normalize_address(raw)
    except InvalidAddress:
        return
    assert normalize_address(raw.upper()).key == address.key


@SETTINGS
@given(st.text(max_size=300), st.sampled_from(["confirm", "unsubscribe", "manage"]))
def test_any_token_string_is_refused_without_crashing(app, token, purpose):
    with app.app_context(), pytest.raises((TokenInvalid, TokenExpired)):
        read_token(purpose, token, max_age=3600)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@SETTINGS
@given(JSON, st.sampled_from(["confirm", "unsubscribe", "manage"]))
@example([2**63, ""], "confirm")  # past every database's integer: an OverflowError once
@example([-(2**63) - 1, ""], "unsubscribe")
@example([True, ""], "manage")
@example([2**31, ""], "confirm")  # past PostgreSQL's INTEGER keys: "integer out of range"
@example([2**31, "", 2**31], "unsubscribe")
def test_a_genuine_token_of_any_shape_names_nobody(app, data, purpose):
    # Signed with our key, yet naming no row of ours: refused as a link, never a crash.
    with (
        app.app_context(),
        Session(engine(app)) as session,
        pytest.raises((TokenInvalid, LinkGone)),
    ):
        row_for_link(session, purpose, make_token(purpose, data))


@SETTINGS
@given(st.binary(max_size=2000))
def test_article_reader_on_random_bytes(data):
    try:
        article = parse_article(decode(data, "fuzz"), name="fuzz")
    except ArticleError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert article.title and article.slug


@SETTINGS
@given(st.text(max_size=3000))
def test_article_reader_on_random_text(text):
    try:
        article = parse_article(text)
    except ArticleError:
        return
    assert "\n" not in article.title and len(article.title) <= 300
    assert all(p.strip() for p in article.paragraphs)


ROUTES = [
    ("GET", "/"),
    ("POST", "/subscribe"),
    ("GET", "/confirm/{x}"),
    ("POST", "/confirm/{x}"),
    ("GET", "/unsubscribe/{x}"),
    ("POST", "/unsubscribe/{x}"),
    ("GET", "/manage/{x}"),
    ("POST", "/manage/{x}"),
    ("GET", "/data/{x}"),
    ("POST", "/data/{x}"),
    ("GET", "/articles/{x}"),
    ("GET", "/newsletters/{x}"),
    ("GET", "/newsletters/explaining-ukraine/issues/{x}"),
    ("GET", "/newsletters/{x}/feed.atom"),
    ("GET", "/outbox/{x}"),
    ("GET", "/outbox/{x}/html"),
]
FIELD_NAMES = st.sampled_from(
    [
        "email",
        "newsletter",
        "csrf_token",
        "website",
        "source",
        "action",
        "erase_confirm",
        "List-Unsubscribe",
        "x",
    ]
)
NASTY = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "a@b.org\r\nBcc: victim@newsroom.org",
            "%00",
            "../../etc/passwd",
            "{{7*7}}",
            "<script>alert(1)</script>",
            "x" * 70_000,
            "\ud800",
            "ÿ" * 500,
            "' OR 1=1 --",
        ]
    ),
)


@pytest.fixture(params=["limits off", "limits on"])
def limited_app(request, tmp_path):
    """The app as the tests usually have it, and with tight limits, so that the fuzzing
    goes through the limiter and its 429 answers too."""
    if request.param == "limits off":
        return make_app(tmp_path)
    return make_app(
        tmp_path, SUBSCRIBE_LIMITS="5/second;30/minute", SUBSCRIBE_ADDRESS_LIMITS="3/minute"
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    segment=st.text(alphabet=string.printable + "é日\u202e", min_size=1, max_size=60),
    fields=st.dictionaries(FIELD_NAMES, NASTY, max_size=5),
    encoding=st.sampled_from(["form", "json", "raw-latin1", "raw-garbage", "multipart"]),
    header=st.sampled_from(
        [
            {},
            {"Accept": "application/json"},
            {"X-Forwarded-For": "1.2.3.4, <script>"},
            {"Content-Type": "application/x-www-form-urlencoded; charset=koi8-r"},
            {"Host": "evil.example.net"},
        ]
    ),
)
def test_no_route_answers_500_to_hostile_requests(
    limited_app, route, segment, fields, encoding, header
):
    method, pattern = route
    path = pattern.replace(
        "{x}", segment.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")
    )
    client = limited_app.test_client()
    kwargs: dict = {"headers": dict(header)}
    if method == "POST":
        if encoding == "form":
            kwargs["data"] = {k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}
        elif encoding == "json":
            kwargs["json"] = {k: v.encode("utf-8", "replace").decode() for k, v in fields.items()}
        elif encoding == "raw-latin1":
            body = "&".join(f"{k}={v}" for k, v in fields.items())
            kwargs["data"] = body.encode("latin-1", "replace")
            kwargs["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
        elif encoding == "raw-garbage":
            kwargs["data"] = bytes(range(256)) * 3
            kwargs["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            kwargs["data"] = {k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}
            kwargs["content_type"] = "multipart/form-data"
    response = client.open(path, method=method, **kwargs)
    assert response.status_code < 500, (method, path, response.status_code)
    assert b"Traceback" not in response.data
