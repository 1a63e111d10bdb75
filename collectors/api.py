"""REST API under /api/admin/ (see API_CONTRACT.md). Views parse, call one service, render."""

import csv

import structlog
from croniter import croniter
from django.conf import settings
from django.db import transaction
from django.http import StreamingHttpResponse
from django.utils import timezone
from django_q.models import Schedule
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, renderers, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from collectors import services, sources
from collectors.alerts import alert_test
from collectors.models import (
    Article,
    Candle,
    CircuitBreaker,
    CollectionRun,
    Collector,
    RateWindow,
    RunEvent,
    RunSymbol,
)
from collectors.operations import performance_report, system_info
from collectors.outbound import MASK as MASK_USERINFO, mask_url
from collectors.times import iso
from config.api import (
    BAD_REQUEST,
    ENVELOPE_BAD_REQUEST,
    NOT_FOUND,
    ApiView,
    CSVRenderer,
    CursorPagination,
    DecimalTextField,
    ErrorSerializer,
    NotActiveSerializer,
    RejectUnknownFields,
    UtcDateTimeField,
    decimal_text,
    validated,
    who,
)
from config.logging import LEVELS

log = structlog.get_logger(__name__)

SECRET_WORDS = ("secret", "password", "token", "api_key", "apikey", "private")
MASK = "********"
RUN_STATUSES = [s for s, _ in CollectionRun.STATUSES]


def collector_by_slug(slug: str, *, candles_for: str = "") -> Collector:
    """The collector named `slug`, for a serializer's `validate_collector` (a field error
    otherwise); with `candles_for` (what needs it), one that stores candles. Public: the
    backfills and quality APIs look collectors up with it too."""
    collector = Collector.objects.filter(slug=slug).first()
    if collector is None:
        raise ValidationError(f"Unknown collector {slug!r}.")
    if candles_for and collector.grain is None:
        raise ValidationError(services.no_series_message(collector=collector, what=candles_for))
    return collector


# --- runs -----------------------------------------------------------------------------

class RangeSerializer(serializers.Serializer):
    start = serializers.CharField(help_text="ISO 8601, UTC, inclusive")
    end = serializers.CharField(help_text="ISO 8601, UTC, exclusive")


class ProgressSerializer(serializers.Serializer):
    symbols_done = serializers.IntegerField()
    symbols_total = serializers.IntegerField()
    records = serializers.IntegerField()
    requests = serializers.IntegerField()
    percent = serializers.FloatField()


class RunSymbolSerializer(serializers.ModelSerializer):
    missing_ranges = RangeSerializer(many=True, read_only=True)
    error = serializers.SerializerMethodField()

    class Meta:
        model = RunSymbol
        fields = ["symbol", "status", "records", "invalid", "duplicates", "revisions", "requests", "retries",
                  "throttled_seconds", "missing_ranges", "error", "attempts", "started_at", "finished_at"]

    def get_error(self, item) -> str | None:
        return item.error or None


class RunSerializer(serializers.ModelSerializer):
    collector = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    requested_symbols = serializers.ListField(child=serializers.CharField(), read_only=True)
    error = serializers.SerializerMethodField()
    elapsed_seconds = serializers.FloatField(read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = CollectionRun
        fields = ["id", "collector", "mode", "status", "start", "end", "requested_symbols",
                  "triggered_by", "error", "created_at", "started_at", "finished_at",
                  "elapsed_seconds", "progress"]

    def get_error(self, run) -> str | None:
        return run.error or None

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, run):
        return run.progress()


class RunDetailSerializer(RunSerializer):
    # A plain string here and in other components keeps one named enum per choice set in the
    # schema (drf-spectacular warns about shared ones unless ENUM_NAME_OVERRIDES names them).
    status = serializers.CharField(read_only=True, help_text=f"One of: {', '.join(RUN_STATUSES)}.")
    details = RunSymbolSerializer(source="symbols", many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["details"]


class RunResultsSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    total_cryptos = serializers.IntegerField(help_text="Symbols in the run.")
    complete = serializers.IntegerField()
    partial = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    total_records = serializers.IntegerField()
    details = RunSymbolSerializer(many=True)


def run_results(run: CollectionRun) -> dict:
    """The contract's `last_results` block for one run."""
    symbols = list(run.symbols.all())
    counts = {s: 0 for s in ("complete", "partial", "failed", "skipped")}
    for item in symbols:
        if item.status in counts:
            counts[item.status] += 1
    return {"run_id": run.pk, "total_cryptos": len(symbols), **counts,
            "total_records": sum(i.records for i in symbols), "details": symbols}


class RunFilterSerializer(serializers.Serializer):
    collector = serializers.SlugField(required=False, help_text="Collector slug")
    status = serializers.ChoiceField(choices=RUN_STATUSES, required=False)
    mode = serializers.ChoiceField(choices=services.MODES, required=False)

    def validate_collector(self, slug):
        return collector_by_slug(slug)


@extend_schema(parameters=[RunFilterSerializer], responses={200: RunSerializer(many=True), 400: BAD_REQUEST})
class RunList(ApiView, generics.ListAPIView):
    """Collection runs, newest first."""

    serializer_class = RunSerializer

    def get_queryset(self):
        filters = validated(RunFilterSerializer, self.request.query_params)
        runs = CollectionRun.objects.select_related("collector").with_progress()
        if "collector" in filters:
            runs = runs.filter(collector=filters["collector"])
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        if "mode" in filters:
            runs = runs.filter(mode=filters["mode"])
        return runs


@extend_schema(responses={200: RunDetailSerializer, 404: NOT_FOUND})
class RunDetail(ApiView, generics.RetrieveAPIView):
    """One run with its per-symbol results."""

    serializer_class = RunDetailSerializer
    queryset = CollectionRun.objects.select_related("collector").prefetch_related("symbols")


class RunCancel(ApiView, APIView):
    @extend_schema(request=None, responses={200: RunDetailSerializer, 404: NOT_FOUND, 409: NotActiveSerializer})
    def post(self, request, pk):
        """Stop a queued or running run; data already stored stays. 409 if it already ended."""
        run = generics.get_object_or_404(CollectionRun.objects.select_related("collector"), pk=pk)
        services.run_cancel(run=run)
        return Response(RunDetailSerializer(run).data)


# --- collect --------------------------------------------------------------------------

class TriggerSerializer(RejectUnknownFields, serializers.Serializer):
    """What to collect: a mode, and optionally the collector, a date range and symbols."""

    mode = serializers.ChoiceField(choices=services.MODES)
    collector = serializers.CharField(required=False, allow_blank=False, max_length=64,
                                      help_text="Collector slug; optional when exactly one is enabled.")
    start_date = UtcDateTimeField(required=False, allow_null=True)
    end_date = UtcDateTimeField(required=False, allow_null=True, end_of_day=True,
                                help_text="A bare date means the end of that day.")
    symbols = serializers.ListField(child=serializers.CharField(max_length=32), required=False,
                                    allow_null=True, max_length=5000,
                                    help_text="Default: all of the collector's symbols.")


class TriggerAcceptedSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    mode = serializers.ChoiceField(choices=services.MODES)
    run_id = serializers.IntegerField()
    collector = serializers.CharField()
    status_endpoint = serializers.CharField()


class TriggerConflictSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    detail = serializers.CharField(help_text="The same as message.")
    run_id = serializers.IntegerField(help_text="The run already queued or running.")


class CollectTrigger(ApiView, APIView):
    error_envelope = True  # the contract's success/message beside a service's refusal

    @extend_schema(request=TriggerSerializer, responses={202: TriggerAcceptedSerializer, 400: ENVELOPE_BAD_REQUEST,
                                                         409: TriggerConflictSerializer})
    def post(self, request):
        """Start a collection run (backward, forward or gap_fill); it runs on the workers.

        Candles: backward fetches history from start_date to the end of yesterday, forward from
        each symbol's last stored candle, gap_fill the holes before it (or before end_date) plus
        every range an earlier run or backfill recorded as missing; only what is missing.
        News (rss_news, symbols = feed names): every mode reads each feed's current entries and
        stores the new ones; forward sends the feed's ETag/Last-Modified (unchanged: one 304),
        backward and gap_fill read the feeds whole; start_date/end_date do not apply."""
        data = validated(TriggerSerializer, request.data)
        collector = services.collector_resolve(slug=data.get("collector"))
        run = services.run_trigger(collector=collector, mode=data["mode"],
                                   start=data.get("start_date"), end=data.get("end_date"),
                                   symbols=data.get("symbols"), triggered_by=who(request))
        body = {"success": True, "message": f"Collection task started: {run.mode}", "mode": run.mode,
                "run_id": run.pk, "collector": collector.slug, "status_endpoint": "/api/admin/collect/status"}
        return Response(TriggerAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class RunRetryFailed(ApiView, APIView):
    error_envelope = True  # answers like the trigger (it is one, for some symbols)

    @extend_schema(request=None, responses={202: TriggerAcceptedSerializer, 400: ENVELOPE_BAD_REQUEST,
                                            404: NOT_FOUND, 409: TriggerConflictSerializer})
    def post(self, request, pk):
        """Start a new run for only the failed, partial or cancelled symbols of a finished run."""
        run = generics.get_object_or_404(CollectionRun.objects.select_related("collector"), pk=pk)
        new = services.run_retry_failed(run=run, triggered_by=who(request))
        body = {"success": True, "message": f"Retrying {len(new.requested_symbols)} symbol(s) of run {run.pk}",
                "mode": new.mode, "run_id": new.pk, "collector": run.collector.slug,
                "status_endpoint": "/api/admin/collect/status"}
        return Response(TriggerAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class CollectorStateSerializer(serializers.Serializer):
    slug = serializers.CharField()
    is_running = serializers.BooleanField()
    status = serializers.CharField(help_text=f"One of: idle, {', '.join(RUN_STATUSES)}.")
    last_run_id = serializers.IntegerField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)


class CollectStatusSerializer(serializers.Serializer):
    is_running = serializers.BooleanField()
    current_operation = serializers.CharField(
        allow_null=True, help_text=f"The running run's mode ({', '.join(services.MODES)}), else null.")
    status = serializers.ChoiceField(choices=["idle"] + RUN_STATUSES)
    collector = serializers.CharField(allow_null=True)
    elapsed_seconds = serializers.FloatField(allow_null=True)
    run_id = serializers.IntegerField(allow_null=True)
    progress = ProgressSerializer(allow_null=True)
    last_results = RunResultsSerializer(allow_null=True,
                                        help_text="The most recent run (the running one while it runs).")
    collectors = CollectorStateSerializer(many=True, required=False,
                                          help_text="Each collector; only without ?collector=.")


class StatusFilterSerializer(serializers.Serializer):
    collector = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                      help_text="Collector slug; leave out for all collectors.")

    def validate_collector(self, slug):
        return collector_by_slug(slug) if slug else None


def run_status(run: CollectionRun | None) -> dict:
    if run is None:
        return {"is_running": False, "current_operation": None, "status": "idle", "collector": None,
                "elapsed_seconds": None, "run_id": None, "progress": None, "last_results": None}
    elapsed = run.elapsed_seconds
    return {"is_running": run.is_active, "current_operation": run.mode if run.is_active else None,
            "status": run.status, "collector": run.collector.slug,
            "elapsed_seconds": None if elapsed is None else round(elapsed, 1), "run_id": run.pk,
            "progress": run.progress(), "last_results": run_results(run)}


def collector_state(collector: Collector) -> dict:
    last = collector.runs.first()
    success = collector.runs.filter(status=CollectionRun.COMPLETE).order_by("-finished_at").first()
    return {"slug": collector.slug, "is_running": bool(last and last.is_active),
            "status": last.status if last else "idle", "last_run_id": last.pk if last else None,
            "last_success_at": success.finished_at if success else None}


class CollectStatus(ApiView, APIView):
    @extend_schema(parameters=[StatusFilterSerializer],
                   responses={200: CollectStatusSerializer, 400: BAD_REQUEST})
    def get(self, request):
        """What is running now and the per-symbol results of the most recent run."""
        collector = validated(StatusFilterSerializer, request.query_params).get("collector")
        runs = CollectionRun.objects.select_related("collector")
        if collector:
            body = run_status(runs.filter(collector=collector).first())
        else:
            body = run_status(runs.first())
            body["collectors"] = [collector_state(c) for c in Collector.objects.all()]
        return Response(CollectStatusSerializer(body).data)


# --- collectors -----------------------------------------------------------------------

def is_secret(key) -> bool:
    return any(word in str(key).lower() for word in SECRET_WORDS)


def mask(config: dict) -> dict:
    """Config as shown: secret-named keys as MASK, URLs' user:password@ as ***@ (lists too)."""
    def shown(key, value):
        if isinstance(value, dict):
            return mask(value)
        if is_secret(key) and value not in (None, ""):
            return MASK
        if isinstance(value, list):
            return [mask_url(v) for v in value]
        return mask_url(value)
    return {k: shown(k, v) for k, v in config.items()}


def unmask(sent: dict, stored: dict) -> dict:
    """A masked secret sent back (a GET edited and PATCHed) means "keep the stored one"; so does
    a URL sent with *** (userinfo, a secret query value) that is, masked, one of the stored URLs
    of that key."""
    def kept(value, old):
        if isinstance(value, str) and MASK_USERINFO in value:
            olds = old if isinstance(old, list) else [old]
            return next((o for o in olds if isinstance(o, str) and mask_url(o) == value), value)
        return value

    out = {}
    for key, value in sent.items():
        old = stored.get(key) if isinstance(stored, dict) else None
        if isinstance(value, dict):
            value = unmask(value, old if isinstance(old, dict) else {})
        elif value == MASK and old is not None:
            value = old
        elif isinstance(value, list):
            value = [kept(v, old) for v in value]
        else:
            value = kept(value, old)
        out[key] = value
    return out


class LastRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    mode = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class CollectorSerializer(RejectUnknownFields, serializers.ModelSerializer):
    """A collector definition: its kind, settings (secrets masked), symbols and schedule."""

    kind = serializers.ChoiceField(choices=list(sources.SOURCES))
    config = serializers.DictField(
        required=False, help_text="Settings for the kind; secrets come back masked. binance_klines: "
        "base_url, interval, and top_n with quote_asset instead of symbols. rss_news: feeds, a list "
        "of feed URLs. On PATCH the keys sent are merged into the stored config; a key sent as null "
        "is removed.")
    symbols = serializers.ListField(child=serializers.CharField(max_length=32), required=False,
                                    max_length=5000, help_text="binance_klines: the symbols to collect "
                                    "(or none, with top_n). rss_news: made from the feeds (their names); "
                                    "what is sent is replaced.")
    last_run = serializers.SerializerMethodField()
    next_run = serializers.SerializerMethodField(help_text="When the schedule starts the next forward run "
                                                           "(null: disabled or no schedule).")

    class Meta:
        model = Collector
        fields = ["slug", "name", "kind", "config", "symbols", "beginning_date", "schedule",
                  "enabled", "max_retries", "retry_backoff_seconds", "created_at", "updated_at",
                  "last_run", "next_run"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"retry_backoff_seconds": {"min_value": 0, "max_value": 600},
                        "max_retries": {"max_value": 20}}

    @extend_schema_field(LastRunSerializer(allow_null=True))
    def get_last_run(self, collector):
        run = collector.runs.first()
        return None if run is None else LastRunSerializer(run).data

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_run(self, collector):
        next_run = Schedule.objects.filter(name=f"{services.SCHEDULE_PREFIX}{collector.slug}").values_list(
            "next_run", flat=True).first()
        return iso(next_run)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["config"] = mask(instance.config)
        return data

    def validate_slug(self, slug):
        if self.instance is not None and slug != self.instance.slug:
            raise ValidationError("The slug cannot be changed; create a new collector.")
        return slug

    def validate_beginning_date(self, day):
        if day > timezone.now().date():
            raise ValidationError("The beginning date is in the future.")
        return day

    def validate_schedule(self, schedule):
        if schedule and not croniter.is_valid(schedule):
            raise ValidationError("Not a cron expression such as '0 */6 * * *' (UTC).")
        return schedule

    def validate(self, attrs):
        instance = self.instance
        kind = attrs.get("kind", instance.kind if instance else None)
        symbols = attrs.get("symbols", instance.symbols if instance else [])
        config = attrs.get("config", {})
        if instance is not None:
            config = unmask(config, instance.config)
            if "config" not in attrs:
                config = instance.config
            elif self.partial:
                config = {**instance.config, **config}
        config = {k: v for k, v in config.items() if v is not None}
        try:
            attrs["config"], attrs["symbols"] = sources.validate_config(kind, config, symbols)
        except sources.ConfigError as error:
            raise ValidationError(error.as_field_errors()) from None
        except (TypeError, ValueError, AttributeError, KeyError):
            # The kind tripped over a value of the wrong type: still the caller's input.
            log.warning("config_validation_crashed", kind=kind, exc_info=True)
            raise ValidationError({"config": [f"A value has the wrong type for the {kind} kind."]}) from None
        return attrs


@extend_schema(responses={200: CollectorSerializer(many=True)})
class CollectorList(ApiView, generics.ListCreateAPIView):
    """Collector definitions (GET) and creating one (POST)."""

    serializer_class = CollectorSerializer
    queryset = Collector.objects.all()

    @extend_schema(responses={201: CollectorSerializer, 400: BAD_REQUEST, 409: ErrorSerializer})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)

    def perform_create(self, serializer):
        # A savepoint: losing a race for the slug (IntegrityError, a 409) leaves the
        # connection usable inside an outer transaction.
        with transaction.atomic():
            serializer.save()


class CollectorDetail(ApiView, generics.RetrieveUpdateAPIView):
    """One collector (GET) and changing it (PATCH; the slug cannot change)."""

    serializer_class = CollectorSerializer
    queryset = Collector.objects.all()
    lookup_field = "slug"
    http_method_names = ["get", "patch", "head", "options"]

    @extend_schema(responses={200: CollectorSerializer, 404: NOT_FOUND})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(responses={200: CollectorSerializer, 400: BAD_REQUEST, 404: NOT_FOUND})
    def patch(self, request, *args, **kwargs):
        return super().patch(request, *args, **kwargs)


# --- candles --------------------------------------------------------------------------

CANDLE_COLUMNS = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
                  "close_time", "quote_volume", "trades"]


class CandleSerializer(serializers.ModelSerializer):
    open_time = UtcDateTimeField(read_only=True)
    close_time = UtcDateTimeField(read_only=True)
    open = DecimalTextField()
    high = DecimalTextField()
    low = DecimalTextField()
    close = DecimalTextField()
    volume = DecimalTextField()
    quote_volume = DecimalTextField()

    class Meta:
        model = Candle
        fields = CANDLE_COLUMNS


class CandleFilterSerializer(serializers.Serializer):
    collector = serializers.SlugField(help_text="Collector slug")
    symbol = serializers.CharField(required=False, max_length=32)
    start = UtcDateTimeField(required=False, help_text="Earliest open_time (inclusive).")
    end = UtcDateTimeField(required=False, end_of_day=True,
                           help_text="Latest open_time (inclusive; a bare date means the whole day).")
    format = serializers.ChoiceField(choices=["json", "csv"], required=False,
                                     help_text="csv streams every matching candle (no pagination), "
                                               "at most EXPORT_MAX_ROWS of them (more is a 400 before "
                                               "the first byte).")

    def validate_collector(self, slug):
        return collector_by_slug(slug, candles_for="the candles list")

    def validate(self, attrs):
        if "start" in attrs and "end" in attrs and attrs["end"] < attrs["start"]:
            raise ValidationError({"end": ["end is before start."]})
        collector, symbol = attrs["collector"], attrs.get("symbol")
        if symbol is not None:
            symbol = attrs["symbol"] = symbol.strip().upper()
            if not services.symbol_known(collector=collector, symbol=symbol):
                raise ValidationError({"symbol": [f"Unknown symbol {symbol[:32]!r} for {collector.slug} "
                                                  "(not one of its symbols, and nothing stored)."]})
        return attrs


def filtered(rows, filters: dict, *, symbol: str, time: str):
    """Stored rows of filters' collector, its symbol (in the `symbol` field) and `time` in
    [start, end], for the filters given."""
    rows = rows.filter(collector=filters["collector"])
    if filters.get(symbol) is not None:
        rows = rows.filter(**{symbol: filters[symbol]})
    if "start" in filters:
        rows = rows.filter(**{f"{time}__gte": filters["start"]})
    if "end" in filters:
        rows = rows.filter(**{f"{time}__lte": filters["end"]})
    return rows


class CandlePagination(CursorPagination):
    ordering = ("open_time", "symbol")  # a stable order, so ties on open_time page correctly
    page_size = 500


class _Echo:
    def write(self, value):
        return value


class CandleList(ApiView, generics.ListAPIView):
    """Stored candles, oldest first; `format=csv` streams all matching rows as CSV."""

    serializer_class = CandleSerializer
    pagination_class = CandlePagination
    renderer_classes = [renderers.JSONRenderer, renderers.BrowsableAPIRenderer, CSVRenderer]

    @extend_schema(parameters=[CandleFilterSerializer], responses={
        (200, "application/json"): CandleSerializer(many=True),
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="With format=csv: a header "
                                           "line, then every matching candle, oldest first (at most "
                                           "EXPORT_MAX_ROWS; more is a 400 naming start, end, symbol)."),
        (400, "application/json"): BAD_REQUEST})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def filters(self) -> dict:
        if not hasattr(self, "_filters"):
            self._filters = validated(CandleFilterSerializer, self.request.query_params)
        return self._filters

    def get_queryset(self):
        return filtered(Candle.objects.all(), self.filters(), symbol="symbol", time="open_time") \
            .order_by("open_time", "symbol")

    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == "csv":
            return self.stream_csv()
        return super().list(request, *args, **kwargs)

    def stream_csv(self):
        filters = self.filters()  # validated before the first byte, so errors are still JSON
        candles = self.get_queryset()
        self.refuse_too_many(candles, filters)
        writer = csv.writer(_Echo())
        decimals = {CANDLE_COLUMNS.index(c) for c in ("open", "high", "low", "close", "volume", "quote_volume")}
        times = {CANDLE_COLUMNS.index(c) for c in ("open_time", "close_time")}

        def rows():
            yield writer.writerow(CANDLE_COLUMNS)
            for row in candles.values_list(*CANDLE_COLUMNS).iterator(chunk_size=5000):
                yield writer.writerow([iso(v) if i in times else decimal_text(v) if i in decimals else v
                                       for i, v in enumerate(row)])

        name = "-".join(filter(None, ["candles", filters["collector"].slug, filters.get("symbol")]))
        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response


    @staticmethod
    def refuse_too_many(candles, filters):
        """A 400 naming what to narrow, before the first byte, when more than EXPORT_MAX_ROWS
        candles match: a longer stream would outlast the web server's worker timeout, which
        cuts it silently (the client gets a 200 and a truncated file)."""
        limit = settings.EXPORT_MAX_ROWS
        if candles[:limit + 1].count() <= limit:  # counts at most limit + 1 rows of the index
            return
        message = (f"More than {limit:,} candles match, and a CSV export is limited to {limit:,} rows "
                   f"(EXPORT_MAX_ROWS). Narrow it: a later start, an earlier end"
                   + (", or one symbol" if filters.get("symbol") is None else "")
                   + "; or page through the JSON list (format=json, its `next` links).")
        raise ValidationError({name: [message] for name in ("start", "end", "symbol")
                               if name != "symbol" or filters.get("symbol") is None})


class ArticleSerializer(serializers.ModelSerializer):
    published_at = UtcDateTimeField(read_only=True)
    fetched_at = UtcDateTimeField(read_only=True)

    class Meta:
        model = Article
        fields = ["source", "guid", "url", "title", "summary", "published_at", "authors", "fetched_at"]


class ArticleFilterSerializer(serializers.Serializer):
    collector = serializers.SlugField(help_text="Slug of an rss_news collector")
    source = serializers.CharField(required=False, max_length=32, help_text="A feed's name (its symbol).")
    start = UtcDateTimeField(required=False, help_text="Earliest published_at (inclusive).")
    end = UtcDateTimeField(required=False, end_of_day=True,
                           help_text="Latest published_at (inclusive; a bare date means the whole day).")

    def validate_collector(self, slug):
        collector = collector_by_slug(slug)
        if getattr(collector.source_class, "model", None) != "collectors.Article":
            raise ValidationError(f"Collector {slug} ({collector.kind}) does not store articles.")
        return collector

    def validate(self, attrs):
        if "start" in attrs and "end" in attrs and attrs["end"] < attrs["start"]:
            raise ValidationError({"end": ["end is before start."]})
        source = attrs.get("source")
        if source is not None:
            source = attrs["source"] = source.strip().upper()
            if not services.symbol_known(collector=attrs["collector"], symbol=source):
                feeds = ", ".join(attrs["collector"].symbols)
                raise ValidationError({"source": [f"Not a feed of {attrs['collector'].slug} (and nothing "
                                                  f"stored from it); its feeds: {feeds}."]})
        return attrs


class ArticlePagination(CursorPagination):
    ordering = ("-published_at", "-id")
    page_size = 100


class ArticleList(ApiView, generics.ListAPIView):
    """Stored news articles of an rss_news collector, newest first (each article once)."""

    serializer_class = ArticleSerializer
    pagination_class = ArticlePagination

    @extend_schema(parameters=[ArticleFilterSerializer], responses={200: ArticleSerializer(many=True),
                                                                    400: BAD_REQUEST})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = validated(ArticleFilterSerializer, self.request.query_params)
        return filtered(Article.objects.all(), filters, symbol="source", time="published_at")


# --- upstreams ------------------------------------------------------------------------

class CircuitBreakerSerializer(serializers.ModelSerializer):
    upstream = serializers.CharField(source="key")
    next_probe_at = serializers.SerializerMethodField(help_text="When an open breaker lets a probe through.")
    rate_budget = serializers.SerializerMethodField(help_text="The shared weight budget of this upstream now.")

    class Meta:
        model = CircuitBreaker
        fields = ["upstream", "state", "failures", "opened_at", "next_probe_at", "times_opened", "last_error",
                  "updated_at", "rate_budget"]

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_probe_at(self, breaker):
        return iso(breaker.next_probe_at)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_rate_budget(self, breaker):
        return RateWindow.state(breaker.key, limit=settings.EXCHANGE_WEIGHT_BUDGET,
                                window_seconds=settings.EXCHANGE_WEIGHT_WINDOW_SECONDS)


class CircuitBreakerList(ApiView, generics.ListAPIView):
    """Each upstream's circuit breaker (closed | open | half_open) and its weight budget."""

    serializer_class = CircuitBreakerSerializer
    queryset = CircuitBreaker.objects.order_by("key")
    pagination_class = None


class AlertTest(ApiView, APIView):
    @extend_schema(request=None, responses={200: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Send a test alert to ALERT_WEBHOOK_URL now (whether or not ENABLE_ALERTING is on):
        `sent`, `attempts` and the webhook's `error` if it did not take it."""
        if not settings.ALERT_WEBHOOK_URL:
            raise ValidationError({"ALERT_WEBHOOK_URL": ["Not set: configure the webhook first."]})
        return Response(alert_test(requested_by=who(request)))


# --- logs -----------------------------------------------------------------------------

class LogFilterSerializer(RejectUnknownFields, serializers.Serializer):
    level = serializers.ChoiceField(choices=["info", "warning", "error", "critical"], default="info",
                                    help_text="This level and above.")
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    since = UtcDateTimeField(required=False, help_text="ISO 8601; only events at or after it.")
    run_id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    backfill_id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    request_id = serializers.CharField(required=False, max_length=64)


class RunEventSerializer(serializers.ModelSerializer):
    timestamp = serializers.DateTimeField(source="created_at")

    class Meta:
        model = RunEvent
        fields = ["timestamp", "level", "event", "run_id", "backfill_id", "request_id", "collector", "symbol",
                  "worker", "fields"]


class LogList(ApiView, APIView):
    @extend_schema(parameters=[LogFilterSerializer], responses={200: RunEventSerializer(many=True),
                                                                400: BAD_REQUEST})
    def get(self, request):
        """Recent structured events of runs and backfills (info and above), newest first; kept
        for DATA_RETENTION_DAYS. Filter by level, time, run, backfill or the request_id of the
        API call that started the work."""
        data = validated(LogFilterSerializer, request.query_params)
        events = RunEvent.objects.filter(levelno__gte=LEVELS[data["level"]])
        if "since" in data:
            events = events.filter(created_at__gte=data["since"])
        for name in ("run_id", "backfill_id", "request_id"):
            if name in data:
                events = events.filter(**{name: data[name]})
        return Response(RunEventSerializer(events.order_by("-id")[:data["limit"]], many=True).data)


# --- operations -------------------------------------------------------------------------

class Performance(ApiView, APIView):
    @extend_schema(responses={200: dict})
    def get(self, request):
        """Runs of the last 24 hours (avg_collection_time in s, success_rate, error_rate), the
        database round trip and mean upstream latency (ms), memory (MB) and CPU (%)."""
        return Response(performance_report())


class SystemInfo(ApiView, APIView):
    @extend_schema(responses={200: dict})
    def get(self, request):
        """Version, database engine, broker, worker clusters seen, and the collectors."""
        return Response(system_info())
