import pytest

from emails.addresses import InvalidAddress, mailbox, normalize_address


@pytest.mark.parametrize(
    ("raw", "email", "key"),
    [
        ("reader@newsroom.org", "reader@newsroom.org", "reader@newsroom.org"),
        ("  Reader@NewsRoom.ORG \t", "Reader@newsroom.org", "reader@newsroom.org"),
        ("kate.t+news@mail.kyiv.ua", "kate.t+news@mail.kyiv.ua", "kate.t+news@mail.kyiv.ua"),
        ("leser@bücher.de", "leser@bücher.de", "leser@bücher.de"),
        ("reader@XN--BCHER-KVA.de", "reader@bücher.de", "reader@bücher.de"),
        (
            "редактор@пример.укр".replace("редактор", "editor"),
            "editor@пример.укр",
            "editor@пример.укр",
        ),
        ("a" * 64 + "@newsroom.org", "a" * 64 + "@newsroom.org", "a" * 64 + "@newsroom.org"),
    ],
)
def test_accepts_and_normalizes(raw, email, key):
    address = normalize_address(raw)
    assert address.email == email
    assert address.key == key
    assert address.ascii.isascii()


def test_internationalized_domain_has_an_ascii_form():
    assert normalize_address("leser@bücher.de").ascii == "leser@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "reader",
        "reader@",
        "@newsroom.org",
        "reader@@newsroom.org",
        "reader@newsroom",  # no dot: not a public domain
        "reader@newsroom..org",
        "reader name@newsroom.org",
        '"reader name"@newsroom.org',  # quoted local parts are refused
        "reader@[127.0.0.1]",  # IP literals are refused
        "a" * 65 + "@newsroom.org",  # local part over 64 octets
        "ü" * 40 + "@newsroom.org",  # non-ASCII local part (needs SMTPUTF8)
        "reader@example.com",
        "reader@example.net",
        "reader@EXAMPLE.org",
        "reader@mail.example.com",
        "reader@newsroom.example",
        "reader@newsroom.test",
        "reader@newsroom.invalid",
        "reader@localhost",
        "reader@newsroom.local",
        "reader@hidden.onion",
        "read\x00er@newsroom.org",
        "reader\r\nBcc: victim@newsroom.org",
        "read\ter@newsroom.org",
        "reader@newsroom.org\x7f",
        "reader@" + "a" * 64 + ".org",  # DNS label over 63 octets
        "x" * 400 + "@newsroom.org",
    ],
)
def test_refuses_what_can_never_receive_mail(raw):
    with pytest.raises(InvalidAddress):
        normalize_address(raw)


@pytest.mark.parametrize(
    ("typed", "inbox"),
    [
        ("Olena.Petrenko+news@gmail.com", "olenapetrenko@gmail.com"),
        ("o.lena.petrenko@googlemail.com", "olenapetrenko@gmail.com"),
        ("reader+digest@newsroom.org", "reader@newsroom.org"),
        ("first.last@newsroom.org", "first.last@newsroom.org"),  # dots count elsewhere
        ("+only@newsroom.org", "+only@newsroom.org"),
    ],
)
def test_the_inbox_an_address_reaches(typed, inbox):
    assert mailbox(normalize_address(typed).key) == inbox
