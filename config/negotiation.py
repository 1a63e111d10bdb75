"""Content negotiation, in a module of its own: DRF reads DEFAULT_CONTENT_NEGOTIATION_CLASS
while rest_framework.views is being imported, so this module must not import that (config.api
does, which made the setting an import cycle that broke start-up in some import orders)."""

from rest_framework import negotiation
from rest_framework.exceptions import ValidationError


class ContentNegotiation(negotiation.DefaultContentNegotiation):
    """An unknown `?format=` is a 400 naming `format` (DRF's default is a bare 404)."""

    def filter_renderers(self, renderers, format):
        picked = [r for r in renderers if r.format == format]
        if not picked:
            known = ", ".join(sorted({r.format for r in renderers}))
            raise ValidationError({"format": [f"Unknown format {format[:20]!r}; use one of: {known}."]})
        return picked
