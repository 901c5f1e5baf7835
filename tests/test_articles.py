"""The article reader on the seed page and on odd files of our own."""

from datetime import datetime
from pathlib import Path

import pytest

from emails.articles import ArticleError, FeedItem, read_article
from tests.helpers import ROOT

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out

ARTICLES = Path(__file__).parent / "articles"
SEED = ROOT / "seeds" / "000_ce0462a30ea3d8dc.txt"
FORM_TITLES = {"Explaining Ukraine with Kate Tsurkan", "Ukraine Daily"}


def all_text(article) -> str:
    feed = [f"{i.time} {i.headline} {i.summary}" for i in article.feed]
    return "\n".join([article.title, article.byline or "", *article.paragraphs, *feed])


def test_seed_page():
    article = read_article(SEED, FORM_TITLES)
    assert article.title == (
        "Putin promises to intensify attacks on Ukraine in response to Belgorod strike"
    )
    assert article.slug == (
        "putin-promises-to-intensify-attacks-on-ukraine-in-response-to-belgorod-strike"
    )
    assert article.byline == "The Kyiv Independent news desk"
    assert article.published == datetime(2024, 1, 1, 20, 19)
    assert article.reading_minutes == 1
    assert len(article.paragraphs) == 6
    assert article.paragraphs[0].startswith("Russian dictator Vladimir Putin on Jan. 1")
    assert article.paragraphs[-1].endswith("could not independently verify these figures.")
    assert [item.time for item in article.feed] == ["5:15 AM", "11:17 PM", "4:16 AM"]
    assert article.feed[1] == FeedItem(
        time="11:17 PM",
        headline="Zelensky meets with CIA director in Kyiv.",
        summary=(
            "President Volodymyr Zelensky said on Dec. 21 that he met with CIA Director "
            "William Burns in Ukraine, marking a rare public acknowledgment of their "
            "discussions during Russia’s full-scale invasion."
        ),
    )


@pytest.mark.parametrize(
    "furniture",
    [
        "Skip to content",
        "Edit post",
        "This audio is created with AI assistance",
        "MORE NEWS",
        "Editors' Picks",
        "indicates required",
        "Enter your email",
        "Please, enter correct email address",
        "Successfuly subscribed",
        "Thank you for signing up",
        "Explaining Ukraine with Kate Tsurkan",
        "News Feed",
    ],
)
def test_page_furniture_is_dropped(furniture):
    assert furniture not in all_text(read_article(SEED, FORM_TITLES))
    assert furniture not in all_text(read_article(ARTICLES / "metro_crlf_bom.txt", FORM_TITLES))


def test_crlf_line_ends_byte_order_mark_and_typographic_quotes():
    article = read_article(ARTICLES / "metro_crlf_bom.txt", FORM_TITLES)
    assert article.title == "Kyiv’s metro stations stay open as shelters through the winter"
    assert not article.title.startswith("\ufeff")
    assert article.byline == "Olena Marchenko and Taras Ivanenko"
    assert article.published == datetime(2025, 3, 3, 7, 5)
    assert article.reading_minutes == 4
    assert len(article.paragraphs) == 3
    assert article.paragraphs[1].startswith("“The stations are the safest place")
    assert not any("\r" in p for p in article.paragraphs)
    assert [i.headline for i in article.feed] == [
        "City adds night buses to the metro’s busiest lines.",
        "Power restored in three districts.",
    ]


def test_other_language_and_script():
    article = read_article(ARTICLES / "ukrainian.txt")
    assert article.title == "Волонтери Харкова відкрили пункт обігріву біля вокзалу"
    # Cyrillic titles are transliterated (the national system of 2010) for anchors and URLs.
    assert article.slug == "volontery-kharkova-vidkryly-punkt-obihrivu-bilia-vokzalu"
    assert article.byline is None and article.published is None
    assert (
        article.paragraphs[1] == "«Люди приходять навіть уночі», — розповіла координаторка Ірина."
    )
    assert article.feed == [
        FeedItem(
            "6:15 AM",
            "Харків отримав нові генератори.",
            "Міська рада повідомила про доставку двадцяти генераторів для лікарень.",
        )
    ]


def test_missing_byline_date_and_feed():
    article = read_article(ARTICLES / "bare.txt")
    assert article.title == "A short note without byline, date or news feed"
    assert article.byline is None and article.published is None
    assert article.reading_minutes is None and article.feed == []
    assert len(article.paragraphs) == 2


def test_utf16_with_byte_order_mark():
    article = read_article(ARTICLES / "utf16.txt")
    assert article.title == "Port of Odesa ships record grain volumes"
    assert article.published == datetime(2025, 10, 2, 15, 30)


def test_markup_is_kept_as_text():
    article = read_article(ARTICLES / "markup.txt")
    assert article.title == "<b>Bold</b> claims & {{ config.SECRET_KEY }} in a title"
    assert '<script>alert("x")</script>' in article.paragraphs[0]


@pytest.mark.parametrize(
    ("control", "encoding"),
    [
        # Controls that Python's splitlines() takes for line ends: they cut a field in two.
        ("\x0b", "utf-8"),
        ("\x0c", "utf-8"),
        ("\x1c", "utf-8"),
        ("\x1d", "utf-8"),
        ("\x1e", "utf-8"),
        ("\x85", "utf-8"),
        ("\x85", "utf-16"),
        ("\x00", "utf-16"),  # refused in UTF-8 as a sign of a binary file, not in UTF-16
    ],
)
def test_control_characters_are_dropped_from_every_field(tmp_path, control, encoding):
    page = tmp_path / "controls.txt"
    page.write_text(
        f"Kyiv{control}under fire\n"
        f"By Olena{control} Petrenko January 2, 2024 10:00 AM 3 min read\n"
        f"The first{control} paragraph.\n"
        f"News Feed\n10:00{control} AM\nAn update{control} from the front\nDetails{control} here\n",
        encoding=encoding,
    )
    article = read_article(page)
    assert article.title == "Kyivunder fire"
    assert (article.byline, article.published) == ("Olena Petrenko", datetime(2024, 1, 2, 10, 0))
    assert article.paragraphs == ["The first paragraph."]
    assert article.feed == [FeedItem("10:00 AM", "An update from the front", "Details here")]


def test_round_trip_through_storage():
    article = read_article(ARTICLES / "metro_crlf_bom.txt", FORM_TITLES)
    from emails.articles import Article

    assert Article.from_dict(article.to_dict()) == article


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\n \r\n\t\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("Café crème".encode("latin-1"), "not UTF-8 text"),
        (b"\xff\xfe\x00\xd8", "not valid UTF-16"),
        (b"Skip to content\nEdit post\nSubscribe\n* indicates required\n", "no title"),
        (b"x" * 400 + b"\nbody", "not a title"),
        (bytes(range(1, 32)) * 3, "binary file"),
    ],
)
def test_files_that_are_not_articles_are_refused_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ArticleError) as refused:
        read_article(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert reason in str(refused.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ArticleError, match="cannot read"):
        read_article(tmp_path / "nope.txt")


def test_a_page_of_the_sites_ukrainian_edition(tmp_path):
    article = read_article(ROOT / "seeds" / "uk" / "000_ce0462a30ea3d8dc.txt", {"Україна щодня"})
    assert article.title.startswith("Путін пообіцяв посилити удари")
    assert article.byline == "Редакція новин The Kyiv Independent"
    assert article.published == datetime(2024, 1, 1, 20, 19)
    assert article.reading_minutes == 1
    assert len(article.paragraphs) == 6  # no furniture, no sign-up form left in
    assert [item.time for item in article.feed] == ["05:15", "23:17", "04:16"]
