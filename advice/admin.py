"""The admin (an OTPAdminSite, config/urls.py): advisors' profiles, and conversations for
supervisors, read-only and as metadata only. The admin never shows a message, a note, a
visitor's token (or its hash) or a phone number: what was said stays in the console, in front
of the advisor who is answering."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy as _

from advice.choices import INTERPRETER_LANGUAGES
from advice.hours import line_status
from advice.models import (
    AdvisorProfile,
    Conversation,
    ConversationEvent,
    EmergencyNumber,
    Holiday,
    OpeningException,
    OpeningSchedule,
    WeeklyHours,
)


def spoken_language_choices() -> list[tuple[str, str]]:
    """The languages an advisor can speak: the visitor side's, then the interpreters'."""
    choices = dict(settings.LANGUAGES)
    for code, name in INTERPRETER_LANGUAGES:
        if code != "other":
            choices.setdefault(code, name)
    return list(choices.items())


class AdvisorProfileForm(forms.ModelForm):
    languages = forms.MultipleChoiceField(
        label=_("languages spoken"),
        choices=spoken_language_choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=_("'Take the next one' prefers conversations in these languages."),
    )

    class Meta:
        model = AdvisorProfile
        fields = ["display_name", "capacity", "languages", "can_see_phone_numbers"]


class AdvisorProfileInline(admin.StackedInline):
    model = AdvisorProfile
    form = AdvisorProfileForm
    can_delete = False
    verbose_name = _("advisor profile")
    verbose_name_plural = _("advisor profile")


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AdvisorUserAdmin(UserAdmin):
    """Django's user admin with the advisor's profile on the same page. Unticking "active" ends
    the user's sessions and closes their console at once (console.signals)."""

    inlines = [AdvisorProfileInline]
    list_display = ["username", "advisor_name", "capacity", "is_active", "is_staff", "last_login"]
    list_select_related = ["advisor_profile"]

    @admin.display(description=_("name shown to visitors"))
    def advisor_name(self, user) -> str:
        profile = getattr(user, "advisor_profile", None)
        return profile.display_name if profile else ""

    @admin.display(description=_("conversations at once"))
    def capacity(self, user) -> int | None:
        profile = getattr(user, "advisor_profile", None)
        return profile.capacity if profile else None


class ConversationEventInline(admin.TabularInline):
    model = ConversationEvent
    fields = ["created_at", "kind", "advisor", "data"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """For supervisors (the 'view conversation' permission): when, how, by whom, and how each
    conversation ended, with its audit trail. Read-only, and never its content."""

    # An explicit list, so a field added to the model later is not shown until someone decides
    # it may be.
    fields = [
        "public_id",
        "channel",
        "status",
        "urgent",
        "writer",
        "language",
        "interpreter_needed",
        "interpreter_language",
        "interpreter_outside_community",
        "interpreter_gender",
        "county",
        "safe_now",
        "advisor",
        "created_at",
        "taken_at",
        "ended_at",
        "end_reason",
        "outcome",
        "last_seq",
        "previous",
    ]
    readonly_fields = fields
    list_display = [
        "short_id",
        "channel",
        "status",
        "urgent",
        "language",
        "interpreter_needed",
        "county",
        "created_at",
        "waited",
        "advisor",
        "end_reason",
        "outcome",
    ]
    list_filter = [
        "status",
        "channel",
        "urgent",
        "interpreter_needed",
        "end_reason",
        "outcome",
        "county",
        "language",
    ]
    list_select_related = ["advisor"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    inlines = [ConversationEventInline]

    @admin.display(description=_("conversation"))
    def short_id(self, conversation: Conversation) -> str:
        return str(conversation.public_id)[:8]

    @admin.display(description=_("waited (s)"))
    def waited(self, conversation: Conversation) -> int:
        return conversation.waited_seconds()

    def get_queryset(self, request):
        # Not even loaded: the ciphertexts and hashes have no business in an admin page.
        model_fields = {f.name for f in Conversation._meta.get_fields()}
        secret = [name for name in ("token_hash", "note_body") if name in model_fields]
        return super().get_queryset(request).defer(*secret)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- opening hours and the numbers shown while closed (advice.hours) ------------------------


class WeeklyHoursInline(admin.TabularInline):
    model = WeeklyHours
    extra = 0


class OpeningExceptionInline(admin.TabularInline):
    model = OpeningException
    extra = 0
    fields = ["date", "opens", "closes", "note"]


@admin.register(OpeningSchedule)
class OpeningScheduleAdmin(admin.ModelAdmin):
    """Weekly hours and dated exceptions per county; the schedule without a county is the
    national default. With no schedule at all the line is always open."""

    inlines = [WeeklyHoursInline, OpeningExceptionInline]
    list_display = ["__str__", "now"]

    @admin.display(description=_("now"))
    def now(self, schedule: OpeningSchedule) -> str:
        status = line_status(schedule.county)
        if status.open:
            return str(_("open"))
        if status.opens_at:
            opens = status.as_dict()["opens_at"][:16].replace("T", " ")
            return str(_("closed, opens %(when)s")) % {"when": opens}
        return str(_("closed"))


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    """Days every schedule is closed, unless its own exception gives hours. `manage.py
    add_holidays YEAR` fills in Sweden's public holidays."""

    list_display = ["date", "name"]
    date_hierarchy = "date"


@admin.register(EmergencyNumber)
class EmergencyNumberAdmin(admin.ModelAdmin):
    """The numbers the chat page lists while the line is closed. Labels are English and shown
    translated; a new label needs its translations added to locale/ to show in every language."""

    list_display = ["number", "label", "order", "active"]
    list_editable = ["order", "active"]
