from django.contrib import admin

from sms import inbound, replies
from sms.models import AutoReply, SmsNumber


@admin.register(SmsNumber)
class SmsNumberAdmin(admin.ModelAdmin):
    list_display = ["number", "county", "active"]
    list_filter = ["active", "county"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        inbound.forget_lines()


@admin.register(AutoReply)
class AutoReplyAdmin(admin.ModelAdmin):
    list_display = ["kind", "text_sv", "text_en"]
    # One row per kind, made by the migration: edited, never added or removed.
    readonly_fields = ["kind"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        replies.clear_cache()
