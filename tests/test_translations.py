"""The visitor side is complete in every one of its seven languages.

"Visitor-side" is decided from the catalogue itself, not from a hand-kept list: a message is the
visitor's when gettext found it in a file the visitor's pages are built from (VISITOR_SOURCES),
or when it labels a choice the chat app shows the visitor (a Choices class or (value, label)
list the chat app's modules use). Every such message must have a translation that is not empty
and not fuzzy in each language of settings.LANGUAGES, the compiled .mo files must say what the
.po files say, and a fresh `makemessages` must find no visitor message the catalogues lack.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from collections import Counter
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import polib
import pytest
from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils import translation
from django.utils.functional import Promise

ROOT = Path(settings.BASE_DIR)
LOCALE = ROOT / "locale"
LANGUAGES = [code for code, _name in settings.LANGUAGES]

# Where the visitor's pages come from, as paths in the .po references (relative to ROOT):
# the pages, their script's strings (chat/strings.py), the chat socket's texts, and the line's
# closed notice with its emergency numbers (advice/hours.py). The interpreter's page is not
# here: it speaks Swedish or English like the advisor side (interpreter/views.py), so its
# strings need only those two.
VISITOR_SOURCES = re.compile(r"^(templates/base\.html|templates/chat/|chat/|advice/hours\.py)")
# The apps whose modules hold what the visitor is offered to choose from.
VISITOR_APPS = ["chat"]

# The script each language's text must be written in (a translation that is a copy of the
# English is caught here); Latin-script languages are checked by comparison with the msgid.
SCRIPTS = {
    "ar": re.compile(r"[\u0600-\u06FF]"),
    "fa": re.compile(r"[\u0600-\u06FF]"),
    "ckb": re.compile(r"[\u0600-\u06FF]"),
    "ti": re.compile(r"[\u1200-\u137F]"),
}
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%[sdif]|\{\w*\}")
TAG = re.compile(r"</?([a-zA-Z][\w-]*)")
WORD = re.compile(r"[A-Za-zÅÄÖåäö]{2,}")

Key = tuple[str, str]  # (msgctxt or "", msgid)


def key_of(entry: polib.POEntry | polib.MOEntry) -> Key:
    return (entry.msgctxt or "", entry.msgid)


def catalogue_path(code: str, domain: str = "django") -> Path:
    return LOCALE / translation.to_locale(code) / "LC_MESSAGES" / f"{domain}.po"


@cache
def catalogue(code: str) -> polib.POFile:
    path = catalogue_path(code)
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run makemessages -l {code}"
    return polib.pofile(str(path))


def is_visitor_entry(entry: polib.POEntry, choice_msgids: set[str]) -> bool:
    return entry.msgid in choice_msgids or any(
        VISITOR_SOURCES.match(path) for path, _line in entry.occurrences
    )


@cache
def visitor_choice_msgids() -> frozenset[str]:
    """The msgids of every lazily translated label in a choice list the chat app's modules use."""
    msgids: set[str] = set()
    for config in apps.get_app_configs():
        if config.label not in VISITOR_APPS:
            continue
        package = importlib.import_module(config.name)
        names = [config.name] + [
            f"{config.name}.{m.name}"
            for m in pkgutil.iter_modules(package.__path__)
            if m.name not in {"migrations", "tests"}
        ]
        for name in names:
            for value in vars(importlib.import_module(name)).values():
                for text in choice_labels(value):
                    if isinstance(text, Promise):
                        with translation.override(None):  # gettext without a catalogue: the msgid
                            msgids.add(str(text))
    return frozenset(msgids)


def choice_labels(value: object) -> list[object]:
    if isinstance(value, type) and issubclass(value, models.Choices):
        return [label for _value, label in value.choices]
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(pair, tuple) and len(pair) == 2 for pair in value)
    ):
        return [label for _value, label in value]
    return []


def visitor_keys(po: polib.POFile) -> set[Key]:
    choices = visitor_choice_msgids()
    return {key_of(e) for e in po if not e.obsolete and is_visitor_entry(e, choices)}


def translations_of(entry: polib.POEntry) -> list[str]:
    if entry.msgid_plural:
        return [entry.msgstr_plural[i] for i in sorted(entry.msgstr_plural)]
    return [entry.msgstr]


def problem(entry: polib.POEntry | None, nplurals: int) -> str | None:
    """Why this entry does not count as translated, or None."""
    if entry is None:
        return "missing"
    if entry.obsolete:
        return "obsolete"
    if "fuzzy" in entry.flags:
        return "fuzzy"
    forms = translations_of(entry)
    if not all(form.strip() for form in forms):
        return "untranslated"
    if entry.msgid_plural and len(forms) != nplurals:
        return f"{len(forms)} plural forms, the language has {nplurals}"
    return None


def nplurals_of(po: polib.POFile) -> int:
    match = re.search(r"nplurals\s*=\s*(\d+)", po.metadata.get("Plural-Forms", ""))
    assert match, "the catalogue has no Plural-Forms header"
    return int(match.group(1))


def untranslated(code: str, keys: set[Key]) -> list[str]:
    po = catalogue(code)
    entries = {key_of(e): e for e in po if not e.obsolete}
    nplurals = nplurals_of(po)
    found = []
    for key in sorted(keys):
        reason = problem(entries.get(key), nplurals)
        if reason:
            found.append(f"{reason}: {key[1]!r}" + (f" (context {key[0]!r})" if key[0] else ""))
    return found


@cache
def all_visitor_keys() -> frozenset[Key]:
    """Every visitor message any committed catalogue knows of (a language that lacks one of
    them lacks a translation)."""
    keys: set[Key] = set()
    for code in LANGUAGES:
        if catalogue_path(code).exists():
            keys |= visitor_keys(catalogue(code))
    return frozenset(keys)


# --- the committed catalogues ---------------------------------------------------------------


def test_the_visitor_side_has_messages_to_translate():
    """Guards the tests below against passing on an empty set."""
    keys = all_visitor_keys()
    assert len(keys) > 20
    assert any(
        path.startswith("templates/chat/")
        for code in LANGUAGES
        for e in catalogue(code)
        for path, _line in e.occurrences
    )
    assert visitor_choice_msgids(), "no choice the visitor sees was found in the chat app"
    assert {msgid for _ctx, msgid in keys} >= visitor_choice_msgids()


@pytest.mark.parametrize("code", LANGUAGES)
def test_every_visitor_message_is_translated_and_not_fuzzy(code):
    missing = untranslated(code, set(all_visitor_keys()))
    assert not missing, f"{code}: {len(missing)} visitor messages:\n" + "\n".join(missing)


@pytest.mark.parametrize("code", LANGUAGES)
def test_each_catalogue_declares_its_language_and_plural_forms(code):
    po = catalogue(code)
    assert not po.metadata_is_fuzzy, "a fuzzy header is ignored by msgfmt"
    assert po.metadata.get("Language") == translation.to_locale(code)
    assert "charset=UTF-8" in po.metadata.get("Content-Type", "")
    assert nplurals_of(po) >= 1


@pytest.mark.parametrize("code", LANGUAGES)
def test_translations_keep_every_placeholder_and_tag_of_the_original(code):
    po = catalogue(code)
    keys = all_visitor_keys()
    broken = []
    for entry in po:
        if entry.obsolete or key_of(entry) not in keys or problem(entry, nplurals_of(po)):
            continue
        allowed = Counter(PLACEHOLDER.findall(entry.msgid))
        allowed |= Counter(PLACEHOLDER.findall(entry.msgid_plural or ""))
        tags = Counter(TAG.findall(entry.msgid))
        for form in translations_of(entry):
            placeholders = Counter(PLACEHOLDER.findall(form))
            # A plural form may leave out the number ("one minute"), never add or rename one.
            ok = (placeholders <= allowed) if entry.msgid_plural else placeholders == allowed
            if not ok or Counter(TAG.findall(form)) != tags:
                broken.append(f"{entry.msgid!r} -> {form!r}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("code", sorted(SCRIPTS))
def test_translations_are_written_in_the_languages_own_script(code):
    po = catalogue(code)
    keys = all_visitor_keys()
    wrong = []
    for entry in po:
        if entry.obsolete or key_of(entry) not in keys or problem(entry, nplurals_of(po)):
            continue
        bare = TAG.sub("", PLACEHOLDER.sub("", entry.msgid))
        if not WORD.search(bare):
            continue  # nothing to translate: a number, a sign
        for form in translations_of(entry):
            if not SCRIPTS[code].search(form):
                wrong.append(f"{entry.msgid!r} -> {form!r}")
    assert not wrong, "\n".join(wrong)


PHONE_NUMBER = re.compile(r"\d+(?:[ -]\d+)+")  # 020-50 50 50, 116 111: digits in groups


@pytest.mark.parametrize("code", settings.LANGUAGES_BIDI)
def test_phone_numbers_in_right_to_left_text_keep_their_dialling_order(code):
    """In a right-to-left sentence "116 111" would be drawn as "111 116": each number in
    groups is wrapped in a left-to-right isolate (U+2066 ... U+2069)."""
    po = catalogue(code)
    keys = all_visitor_keys()
    bare = []
    for entry in po:
        if entry.obsolete or key_of(entry) not in keys:
            continue
        for form in translations_of(entry):
            for match in PHONE_NUMBER.finditer(form):
                before = form[match.start() - 1] if match.start() else ""
                after = form[match.end()] if match.end() < len(form) else ""
                if (before, after) != ("\u2066", "\u2069"):
                    bare.append(f"{match.group()!r} in {form!r}")
    assert not bare, "\n".join(bare)


@pytest.mark.parametrize("code", ["so"])
def test_latin_script_translations_are_not_copies_of_the_original(code):
    po = catalogue(code)
    keys = all_visitor_keys()
    copies = [
        e.msgid
        for e in po
        if not e.obsolete
        and key_of(e) in keys
        and e.msgstr == e.msgid
        and len(WORD.findall(e.msgid)) > 1
    ]
    assert not copies, "\n".join(copies)


@pytest.mark.parametrize("code", LANGUAGES)
def test_the_compiled_catalogue_says_what_the_po_file_says(code):
    mo_path = catalogue_path(code).with_suffix(".mo")
    assert mo_path.exists(), f"{mo_path.relative_to(ROOT)} is missing: run compilemessages"
    compiled = {key_of(e): e for e in polib.mofile(str(mo_path)) if e.msgid}
    stale = []
    for entry in catalogue(code):
        if entry.obsolete or not entry.msgid or problem(entry, nplurals_of(catalogue(code))):
            continue
        got = compiled.get(key_of(entry))
        expected = translations_of(entry)
        if got is None or (translations_of(got) if got.msgid_plural else [got.msgstr]) != expected:
            stale.append(entry.msgid)
    assert not stale, f"{code}: recompile ({len(stale)} stale), e.g. {stale[:3]}"


# --- the pages as a visitor gets them ----------------------------------------------------------

# What stays as it is in every language: names (the service, the languages in their own names,
# the counties, the help lines), the key to press, and a few words that are shown next to their
# translation because that is what the visitor will see in the browser or hear on the phone.
KEPT_AS_IS = re.compile(
    r"Shift|JavaScript|BRIS|Kvinnofridslinjen|incognito|cookie|IP|encrypted|socialtjänsten|"
    r"län|www\.[\w.]+|[\d\s.,:;!?()«»“”\"'/+\-\u2013\u2014…]"
)


def kept_names() -> set[str]:
    from advice.choices import COUNTIES, INTERPRETER_LANGUAGES

    return {
        settings.SERVICE_NAME,
        settings.VISITOR_PAGE_TITLE,
        *(name for _code, name in settings.LANGUAGES),
        *(str(name) for code, name in INTERPRETER_LANGUAGES if code != "other"),
        *(name for _code, name in COUNTIES),
    }


class PageText(HTMLParser):
    """The text a visitor can see or hear: text nodes and the attributes read aloud, not
    scripts or styles; plus the strings the page hands to its script (visitor-config)."""

    SPOKEN = {"aria-label", "title", "placeholder", "alt"}

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.config = ""
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.texts += [v for k, v in attrs if k in self.SPOKEN and v]
        if tag in {"script", "style"}:
            self._in.append(attributes.get("id") or tag)

    def handle_endtag(self, tag):
        if tag in {"script", "style"} and self._in:
            self._in.pop()

    def handle_data(self, data):
        if self._in and self._in[-1] == "visitor-config":
            self.config += data
        elif not self._in and data.strip():
            self.texts.append(" ".join(data.split()))


NOT_TEXT = {"socketPath", "language", "timeZone", "maxLength"}  # settings, not words


def strings_in(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in NOT_TEXT for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.django_db
@pytest.mark.parametrize("code", sorted(SCRIPTS))
@pytest.mark.parametrize("path", ["", "about/", "chat/"])
def test_no_visitor_page_shows_text_that_was_not_translated(client, code, path):
    """Every state of the chat is in the page (the script shows one at a time), so this sees
    them all. In a language with its own script, text without a letter of that script is
    left over from the original, unless it is a name that is kept as it is."""
    response = client.get(f"/{code}/{path}")
    assert response.status_code == 200
    page = PageText()
    page.feed(response.content.decode())
    config = json.loads(page.config)
    script_strings = strings_in(config.get("strings", {}))
    names = kept_names()
    left_over = [
        text
        for text in page.texts + script_strings
        if not SCRIPTS[code].search(text)
        and text not in names
        and KEPT_AS_IS.sub("", TAG.sub("", PLACEHOLDER.sub("", text))).strip()
    ]
    assert not left_over, left_over


# --- a fresh extraction ---------------------------------------------------------------------

NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "locale",
    "staticfiles",
    "__pycache__",
    "*.sqlite3",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "bench",
    "docs",
    "*.mo",
    "*.po",
)


@pytest.fixture(scope="module")
def fresh_extraction(tmp_path_factory) -> polib.POFile:
    """What `makemessages` extracts from the sources as they are now, into a copy of the
    project, so the real catalogues are left alone."""
    copy = tmp_path_factory.mktemp("extraction") / "project"
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCE)
    (copy / "locale").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "makemessages",
            "-l",
            "en",
            "--no-obsolete",
            "--ignore=.venv",
            "--ignore=node_modules",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert result.returncode == 0, result.stderr
    return polib.pofile(str(copy / "locale" / "en" / "LC_MESSAGES" / "django.po"))


def test_a_fresh_extraction_finds_the_visitor_pages(fresh_extraction):
    keys = visitor_keys(fresh_extraction)
    assert len(keys) > 20
    assert any(
        path.startswith("templates/chat/")
        for e in fresh_extraction
        for path, _line in e.occurrences
    )


@pytest.mark.parametrize("code", LANGUAGES)
def test_makemessages_would_add_no_untranslated_visitor_message(fresh_extraction, code):
    missing = untranslated(code, visitor_keys(fresh_extraction))
    assert not missing, (
        f"{code}: the sources have visitor messages the catalogue lacks; run makemessages and "
        "translate:\n" + "\n".join(missing)
    )
