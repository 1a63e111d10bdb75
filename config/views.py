"""Health, readiness, the landing page and JSON error pages."""

import time
from datetime import timedelta

import structlog
from csp.constants import NONCE, SELF
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template import engines
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from collectors.metrics import DATABASE_REGISTRY
from collectors.models import CollectionRun
from collectors.times import iso
from config.health import run_checks

log = structlog.get_logger(__name__)
STARTED = time.monotonic()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    timestamp = serializers.DateTimeField()
    service = serializers.CharField()
    version = serializers.CharField()
    uptime_seconds = serializers.FloatField()
    database_connected = serializers.BooleanField()
    last_collection = serializers.DateTimeField(allow_null=True, help_text="When the last run ended.")
    last_successful_collection = serializers.DateTimeField(allow_null=True)
    collection_errors = serializers.IntegerField(allow_null=True, help_text="Failed runs in the last 24 hours.")
    workers_alive = serializers.BooleanField(help_text="A django-q2 cluster is alive (does not decide liveness).")
    problems = serializers.ListField(child=serializers.CharField())


class ReadyChecksSerializer(serializers.Serializer):
    database = serializers.BooleanField()
    migrations = serializers.BooleanField()
    cache = serializers.BooleanField()
    workers = serializers.BooleanField(help_text="A django-q2 cluster is alive (informational).")


class ReadySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ready", "not_ready"])
    checks = ReadyChecksSerializer()
    problems = serializers.ListField(child=serializers.CharField())


class JsonAlways(BaseContentNegotiation):
    """Probes answer JSON whatever they Accept (curl, kubelets and load balancers differ)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def probe(view):
    """A GET view that needs no key and no session and always answers JSON."""
    view.authentication_classes = []
    view.permission_classes = [AllowAny]
    view.throttle_classes = []  # never throttled, and no cache (database) needed to answer
    view.renderer_classes = [JSONRenderer]
    view.content_negotiation_class = JsonAlways
    return api_view(["GET"])(view)


def _collection_facts() -> dict:
    runs = CollectionRun.objects.exclude(finished_at=None).order_by("-finished_at")
    last = runs.first()
    good = runs.filter(status=CollectionRun.COMPLETE).first()
    errors = runs.filter(status=CollectionRun.FAILED,
                         finished_at__gte=timezone.now() - timedelta(hours=24)).count()
    return {"last_collection": iso(last.finished_at) if last else None,
            "last_successful_collection": iso(good.finished_at) if good else None,
            "collection_errors": errors}


@extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[], tags=["operations"])
@probe
def health(request):
    """Liveness plus database (200 healthy, 503 not). Never depends on an upstream exchange;
    `workers_alive` reports django-q2 clusters without deciding liveness."""
    checks = run_checks("database", "workers")
    db_ok = checks["database"] is None
    body = {"status": "healthy", "timestamp": iso(timezone.now()), "service": "collectors",
            "version": settings.VERSION, "uptime_seconds": round(time.monotonic() - STARTED, 1),
            "database_connected": db_ok, "last_collection": None, "last_successful_collection": None,
            "collection_errors": None, "workers_alive": checks["workers"] is None,
            "problems": [f"{name}: {error}" for name, error in checks.items() if error]}
    if db_ok:
        try:
            body.update(_collection_facts())
        except Exception:  # reachable but not usable (tables missing, locked, ...)
            log.warning("health_query_failed", exc_info=True)
            db_ok = False
            body["problems"].append("database: collection tables unreadable")
    body["status"] = "healthy" if db_ok else "unhealthy"
    return Response(body, status=200 if db_ok else 503)


@extend_schema(responses={200: ReadySerializer, 503: ReadySerializer}, auth=[], tags=["operations"])
@probe
def ready(request):
    """Readiness: the database answers, every migration is applied and the cache works.

    Worker clusters are reported (`workers`) but do not decide readiness: the web stays up for
    operators while workers are down; /health/checks/ fails on them for monitoring."""
    checks = run_checks("database", "migrations", "cache", "workers")
    for name, error in checks.items():
        if error:
            log.warning("ready_check_failed", check=name, error=error)
    ok = all(checks[name] is None for name in ("database", "migrations", "cache"))
    return Response({"status": "ready" if ok else "not_ready",
                     "checks": {name: error is None for name, error in checks.items()},
                     "problems": [f"{name}: {error}" for name, error in checks.items() if error]},
                    status=200 if ok else 503)


def home(request):
    return redirect("admin:index")


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Internal error; it has been logged."}, status=500)


class OfflineRedocView(SpectacularRedocView):
    """ReDoc from the installed sidecar package, without the stock template's Google Fonts
    links (the docs must work with no internet access; ReDoc falls back to system fonts), its
    inline <style> and its inline init script (the Content-Security-Policy allows neither): both
    are static files. ReDoc's own <style> elements (styled-components) carry the response's CSP
    nonce, the one thing on any page that the policy allows inline."""

    template = '''{% extends "drf_spectacular/redoc.html" %}{% load static %}{% block head %}
    <title>{{ title|default:"Redoc" }}</title>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <link rel="stylesheet" href="{% static "docs/redoc.css" %}">
    {% endblock head %}{% block body %}
    <div id="redoc-container" data-spec-url="{{ schema_url }}" data-nonce="{{ request.csp_nonce }}"></div>
    <script src="{{ redoc_standalone }}"></script>
    <script src="{% static "docs/redoc_init.js" %}"></script>
    {% endblock body %}'''

    # What ReDoc needs beyond the site-wide policy, on this page only: its styled-components
    # <style> elements get the nonce; the bundle's perfect-scrollbar stylesheet (inserted when the
    # script loads, before a nonce can be handed over) and an empty <style> are allowed by hash
    # (of redoc.standalone.js as drf-spectacular-sidecar ships it; tests/config/test_csp_browser.py
    # notices a new bundle); the search index runs in a worker made from a blob: URL (only the
    # page's own script can make one). ReDoc's footer asks cdn.redoc.ly for a logo: blocked, and
    # the image hides itself.
    CSP_UPDATE = {
        "style-src": [NONCE, "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
                      "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"],
        "worker-src": [SELF, "blob:"],
    }

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        html = engines["django"].from_string(self.template).render(response.data, request)
        response = HttpResponse(html)
        response._csp_update = self.CSP_UPDATE  # django-csp's csp_update, for a class-based view
        return response


def metrics(request):
    """Prometheus text format: this process's (or, with PROMETHEUS_MULTIPROC_DIR, this machine's
    processes') HTTP, database and upstream metrics, plus the collection metrics derived from the
    database (see collectors.metrics)."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry = REGISTRY
    try:
        derived, up = generate_latest(DATABASE_REGISTRY), 1
    except Exception:  # the database is down: say so, and still serve the in-process metrics
        log.warning("metrics_database_unavailable", exc_info=True)
        derived, up = b"", 0
    gauge = (b"# HELP collector_metrics_database_up 1 if the collection metrics could be read from the database.\n"
             b"# TYPE collector_metrics_database_up gauge\ncollector_metrics_database_up %d\n" % up)
    return HttpResponse(generate_latest(registry) + derived + gauge, content_type=CONTENT_TYPE_LATEST)
