"""NotificationAdmin: adding one sends it, changing one updates it, deleting one retracts it
(through services, once each, after commit; SPEC §8, §14)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from . import services
from .models import Audience, Notification


class AudienceFilter(admin.SimpleListFilter):
    title = "audience"
    parameter_name = "audience"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Audience.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        value = self.value()
        if value == Audience.EVERYONE:
            return queryset.filter(recipient__isnull=True, group__isnull=True)
        if value == Audience.GROUP:
            return queryset.filter(group__isnull=False)
        if value == Audience.USER:
            return queryset.filter(recipient__isnull=False)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["title", "level", "category", "audience_display", "created_at", "expires_at", "read_by"]
    list_filter = ["level", "category", AudienceFilter, "created_at"]
    search_fields = ["title", "body"]
    date_hierarchy = "created_at"
    raw_id_fields = ["recipient"]
    fields = ["title", "body", "level", "url", "progress", "recipient", "group", "category", "data", "expires_at"]
    #: Once sent, who it goes to, its category and expiry stay; its content can change (SPEC §14).
    sent_fields: list[str] = ["recipient", "group", "category", "expires_at", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        # Retracted notices are tombstones kept for replay: deleted, as far as the admin shows.
        return super().get_queryset(request).filter(retracted_at__isnull=True).select_related(
            "recipient", "group"
        ).annotate(_read_by=Count("read_marks", distinct=True))

    def get_readonly_fields(self, request: HttpRequest, obj: Notification | None = None) -> list[str]:
        return self.sent_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Notification | None = None) -> Any:
        fields = list(self.fields)
        return [*fields, "created_at", "updated_at"] if obj is not None else fields

    @admin.display(description="audience")
    def audience_display(self, obj: Notification) -> str:
        if obj.recipient_id is not None:
            return f"user: {obj.recipient}"
        if obj.group_id is not None:
            return f"group: {obj.group}"
        return "everyone"

    @admin.display(description="read by", ordering="_read_by")
    def read_by(self, obj: Notification) -> int:
        return getattr(obj, "_read_by", 0)

    def save_model(self, request: HttpRequest, obj: Notification, form: Any, change: bool) -> None:
        if not change:
            services.send(obj)
            return
        changed = {name: form.cleaned_data[name] for name in form.changed_data if name in services.UPDATE_FIELDS}
        if changed:  # streamed to those who see it as ``event: update`` (SPEC §14)
            services.update(obj, **changed)

    def delete_model(self, request: HttpRequest, obj: Notification) -> None:
        services.retract(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        for notification in queryset.order_by("id"):
            services.retract(notification)
