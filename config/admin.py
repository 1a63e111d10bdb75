"""Admin plumbing shared by the apps' admins: the site's titles, read-only record admins, the
progress bar, and showing a service's refusal (config.errors) as an admin message. No app's
models here (the apps' admin modules import this)."""

from django.contrib import admin, messages
from django.utils.html import format_html

from config.errors import Conflict, DomainError


def set_site_titles(site: admin.AdminSite):
    """The admin's header, page title and index title (the URLconf calls this once)."""
    site.site_header = "Market-data collectors"
    site.site_title = "Collectors admin"
    site.index_title = "Collection control plane"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the workers: operators look, they do not add or edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def progress_bar(percent: float, status: str) -> str:
    colour = {"failed": "#ba2121", "partial": "#d98e04", "cancelled": "#888"}.get(status, "#2e7d32")
    # SVG, not styled <div>s: the Content-Security-Policy blocks style attributes.
    return format_html(
        '<svg class="progress" width="140" height="10" viewBox="0 0 100 10" preserveAspectRatio="none" '
        'role="img" aria-label="{}%"><rect width="100" height="10" fill="#eee"/>'
        '<rect width="{}" height="10" fill="{}"/></svg> <span>{}%</span>',
        f"{percent:.0f}", f"{min(max(percent, 0), 100):.1f}", colour, f"{percent:.0f}")


def refusal_message(request, error: DomainError, *, prefix: str = ""):
    """A service's refusal as an admin message: a conflict with the current state (a job
    already finished, a run already going) as a warning, bad input as an error."""
    level = messages.WARNING if isinstance(error, Conflict) else messages.ERROR
    messages.add_message(request, level, f"{prefix}{error.detail}")
