"""Fixed lists the visitor and the advisor choose from. Fixed lists, never free text, so nothing
identifying can be typed into them."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Channel(models.TextChoices):
    WEB = "web", _("Web chat")
    SMS = "sms", _("SMS")


class Writer(models.TextChoices):
    YOUNG_PERSON = "young", _("A young person")
    PROFESSIONAL = "professional", _("A professional")
    OTHER = "other", _("Someone else")


class SafeNow(models.TextChoices):
    YES = "yes", _("Yes")
    NO = "no", _("No")
    UNKNOWN = "unknown", _("I don't know")


class Outcome(models.TextChoices):
    ADVICE_GIVEN = "advice_given", _("Advice given")
    SOCIAL_SERVICES = "social_services", _("Referred to social services")
    POLICE = "police", _("Referred to the police")
    PROTECTED_HOUSING = "protected_housing", _("Protected housing arranged")
    OTHER = "other", _("Other")


# Sweden's 21 counties (län), by their official letter codes.
COUNTIES = [
    ("AB", "Stockholms län"),
    ("C", "Uppsala län"),
    ("D", "Södermanlands län"),
    ("E", "Östergötlands län"),
    ("F", "Jönköpings län"),
    ("G", "Kronobergs län"),
    ("H", "Kalmar län"),
    ("I", "Gotlands län"),
    ("K", "Blekinge län"),
    ("M", "Skåne län"),
    ("N", "Hallands län"),
    ("O", "Västra Götalands län"),
    ("S", "Värmlands län"),
    ("T", "Örebro län"),
    ("U", "Västmanlands län"),
    ("W", "Dalarnas län"),
    ("X", "Gävleborgs län"),
    ("Y", "Västernorrlands län"),
    ("Z", "Jämtlands län"),
    ("AC", "Västerbottens län"),
    ("BD", "Norrbottens län"),
]

# Languages an interpreter can be asked for; each shown in its own name.
INTERPRETER_LANGUAGES = [
    ("ar", "العربية (Arabic)"),
    ("fa", "فارسی (Persian)"),
    ("prs", "دری (Dari)"),
    ("so", "Soomaali (Somali)"),
    ("ti", "ትግርኛ (Tigrinya)"),
    ("ckb", "کوردی (Kurdish Sorani)"),
    ("kmr", "Kurmancî (Kurdish Kurmanji)"),
    ("tr", "Türkçe (Turkish)"),
    ("bs", "Bosanski/Hrvatski/Srpski"),
    ("ru", "Русский (Russian)"),
    ("en", "English"),
    ("other", _("Another language")),
]


class InterpreterGender(models.TextChoices):
    """Who the visitor would rather have as an interpreter. In honour contexts this can decide
    whether the visitor dares to speak at all."""

    ANY = "", _("No preference")
    WOMAN = "woman", _("A woman")
    MAN = "man", _("A man")
