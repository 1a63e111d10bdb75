"""REST API under /api/admin/ (see API_CONTRACT.md). Views parse, call one service, render."""

import csv
from datetime import datetime, time as dtime, timezone as dt_timezone

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, pagination, renderers, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from collectors import services, sources
from collectors.models import Candle, CollectionRun, Collector, RunNotActive, RunSymbol

SECRET_WORDS = ("secret", "password", "token", "api_key", "apikey", "private")
MASK = "********"


# --- plumbing -------------------------------------------------------------------------

class UtcDateTimeField(serializers.Field):
    """ISO 8601 date or datetime in; aware UTC out. A bare date as an end means end of day."""

    def __init__(self, *, end_of_day=False, **kwargs):
        self.end_of_day = end_of_day
        super().__init__(**kwargs)

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail_invalid(value)
        text = value.strip()
        try:
            moment = parse_datetime(text.replace("z", "Z"))
            if moment is None:
                day = parse_date(text)
                if day is None:
                    self.fail_invalid(value)
                moment = datetime.combine(day, dtime.max if self.end_of_day else dtime.min)
        except ValueError:
            self.fail_invalid(value)
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=dt_timezone.utc)
        return moment.astimezone(dt_timezone.utc)

    def fail_invalid(self, value):
        raise ValidationError(f"Not an ISO 8601 date or datetime: {str(value)[:40]!r} "
                              "(use 2025-01-01 or 2025-01-01T00:00:00Z).")

    def to_representation(self, value):
        return iso(value)


def iso(moment):
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


def bad_request(field, message, **extra):
    return Response({"detail": message, field: [message], **extra}, status=status.HTTP_400_BAD_REQUEST)


def validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- runs -----------------------------------------------------------------------------

class RunSymbolSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunSymbol
        fields = ["symbol", "status", "records", "requests", "retries", "throttled_seconds",
                  "missing_ranges", "error", "attempts", "started_at", "finished_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["error"] = data["error"] or None
        return data


class RunSerializer(serializers.ModelSerializer):
    collector = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    elapsed_seconds = serializers.FloatField(read_only=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = CollectionRun
        fields = ["id", "collector", "mode", "status", "start", "end", "requested_symbols",
                  "triggered_by", "error", "created_at", "started_at", "finished_at",
                  "elapsed_seconds", "progress"]

    def get_progress(self, run) -> dict:
        return run.progress()


class RunDetailSerializer(RunSerializer):
    details = RunSymbolSerializer(source="symbols", many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["details"]


def run_results(run: CollectionRun) -> dict:
    """The contract's `last_results` block for one run."""
    symbols = list(run.symbols.all())
    counts = {s: 0 for s in ("complete", "partial", "failed", "skipped")}
    for item in symbols:
        if item.status in counts:
            counts[item.status] += 1
    return {"run_id": run.pk, "total_cryptos": len(symbols), **counts,
            "total_records": sum(i.records for i in symbols),
            "details": RunSymbolSerializer(symbols, many=True).data}


class RunFilterSerializer(serializers.Serializer):
    collector = serializers.SlugField(required=False)
    status = serializers.ChoiceField(choices=[s for s, _ in CollectionRun.STATUSES], required=False)
    mode = serializers.ChoiceField(choices=services.MODES, required=False)


@extend_schema(parameters=[RunFilterSerializer])
class RunList(generics.ListAPIView):
    """Collection runs, newest first."""

    serializer_class = RunSerializer

    def get_queryset(self):
        filters = validated(RunFilterSerializer, self.request.query_params)
        runs = CollectionRun.objects.select_related("collector")
        if "collector" in filters:
            runs = runs.filter(collector__slug=filters["collector"])
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        if "mode" in filters:
            runs = runs.filter(mode=filters["mode"])
        return runs


class RunDetail(generics.RetrieveAPIView):
    """One run with its per-symbol results."""

    serializer_class = RunDetailSerializer
    queryset = CollectionRun.objects.select_related("collector")


class RunCancel(APIView):
    @extend_schema(request=None, responses={200: RunDetailSerializer})
    def post(self, request, pk):
        """Stop a queued or running run; data already stored stays."""
        run = generics.get_object_or_404(CollectionRun, pk=pk)
        try:
            services.run_cancel(run=run)
        except RunNotActive as error:
            return Response({"detail": str(error), "status": run.status}, status=status.HTTP_409_CONFLICT)
        return Response(RunDetailSerializer(run).data)


# --- collect --------------------------------------------------------------------------

class TriggerSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=services.MODES)
    collector = serializers.CharField(required=False, allow_blank=False, max_length=64)
    start_date = UtcDateTimeField(required=False, allow_null=True)
    end_date = UtcDateTimeField(required=False, allow_null=True, end_of_day=True)
    symbols = serializers.ListField(child=serializers.CharField(max_length=32), required=False,
                                    allow_null=True, max_length=5000)


def who(request) -> str:
    user = request.user
    return str(user) if getattr(user, "username", "").startswith("api:") else f"user:{user}"


class CollectTrigger(APIView):
    @extend_schema(request=TriggerSerializer, responses={202: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    def post(self, request):
        """Start a collection run (backward, forward or gap_fill); it runs on the workers."""
        data = validated(TriggerSerializer, request.data)
        try:
            collector = services.collector_resolve(slug=data.get("collector"))
            run = services.run_trigger(collector=collector, mode=data["mode"],
                                       start=data.get("start_date"), end=data.get("end_date"),
                                       symbols=data.get("symbols"), triggered_by=who(request))
        except services.TriggerError as error:
            extra = {"choices": error.choices} if error.choices is not None else {}
            return bad_request(error.field, error.message, success=False, **extra)
        except services.RunConflict as conflict:
            return Response({"success": False, "message": str(conflict), "run_id": conflict.run.pk},
                            status=status.HTTP_409_CONFLICT)
        return Response({"success": True, "message": f"Collection task started: {run.mode}",
                         "mode": run.mode, "run_id": run.pk, "collector": collector.slug,
                         "status_endpoint": "/api/admin/collect/status"},
                        status=status.HTTP_202_ACCEPTED)


def run_status(run: CollectionRun | None) -> dict:
    if run is None:
        return {"is_running": False, "current_operation": None, "status": "idle",
                "elapsed_seconds": None, "run_id": None, "progress": None, "last_results": None}
    return {"is_running": run.is_active, "current_operation": run.mode if run.is_active else None,
            "status": run.status, "collector": run.collector.slug,
            "elapsed_seconds": run.elapsed_seconds, "run_id": run.pk, "progress": run.progress(),
            "last_results": run_results(run)}


class CollectStatus(APIView):
    @extend_schema(parameters=[OpenApiParameter("collector", str, description="Collector slug")],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        """What is running now and the per-symbol results of the most recent run."""
        slug = request.query_params.get("collector")
        if slug:
            collector = Collector.objects.filter(slug=slug).first()
            if collector is None:
                return bad_request("collector", f"Unknown collector {slug!r}.")
            return Response(run_status(collector.runs.select_related("collector").first()))
        latest = CollectionRun.objects.select_related("collector").first()
        body = run_status(latest)
        collectors = list(Collector.objects.all())
        if len(collectors) > 1:
            body["collectors"] = [collector_summary(c) for c in collectors]
        return Response(body)


def collector_summary(collector: Collector) -> dict:
    last = collector.runs.first()
    success = collector.runs.filter(status=CollectionRun.COMPLETE).order_by("-finished_at").first()
    return {"slug": collector.slug, "is_running": bool(last and last.is_active),
            "status": last.status if last else "idle", "last_run_id": last.pk if last else None,
            "last_success_at": iso(success.finished_at) if success else None}


# --- collectors -----------------------------------------------------------------------

def mask(config: dict) -> dict:
    return {k: (MASK if any(w in k.lower() for w in SECRET_WORDS) and v else v) for k, v in config.items()}


class CollectorSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=list(sources.SOURCES))
    config = serializers.JSONField(required=False)
    symbols = serializers.JSONField(required=False)
    beginning_date = serializers.DateField(required=False)
    last_run = serializers.SerializerMethodField()

    class Meta:
        model = Collector
        fields = ["slug", "name", "kind", "config", "symbols", "beginning_date", "schedule",
                  "enabled", "max_retries", "retry_backoff_seconds", "created_at", "updated_at",
                  "last_run"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"retry_backoff_seconds": {"min_value": 0, "max_value": 600},
                        "max_retries": {"max_value": 20}}

    def get_last_run(self, collector) -> dict | None:
        run = collector.runs.first()
        return None if run is None else {"id": run.pk, "mode": run.mode, "status": run.status,
                                          "created_at": iso(run.created_at),
                                          "finished_at": iso(run.finished_at)}

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["config"] = mask(instance.config)
        return data

    def validate(self, attrs):
        instance = self.instance
        kind = attrs.get("kind", instance.kind if instance else None)
        config = attrs.get("config", instance.config if instance else {})
        symbols = attrs.get("symbols", instance.symbols if instance else [])
        if instance and isinstance(config, dict):  # a masked secret sent back means "unchanged"
            config = {k: (instance.config.get(k) if v == MASK else v) for k, v in config.items()}
        try:
            attrs["config"], attrs["symbols"] = sources.validate_config(kind, config, symbols)
        except sources.ConfigError as error:
            raise ValidationError(error.as_field_errors())
        if instance and "slug" in attrs and attrs["slug"] != instance.slug:
            raise ValidationError({"slug": ["The slug cannot be changed; create a new collector."]})
        return attrs


class CollectorList(generics.ListCreateAPIView):
    """Collector definitions (GET) and creating one (POST)."""

    serializer_class = CollectorSerializer
    queryset = Collector.objects.all()


class CollectorDetail(generics.RetrieveUpdateAPIView):
    """One collector (GET) and changing it (PATCH)."""

    serializer_class = CollectorSerializer
    queryset = Collector.objects.all()
    lookup_field = "slug"
    http_method_names = ["get", "patch", "head", "options"]


# --- candles --------------------------------------------------------------------------

class CandleSerializer(serializers.ModelSerializer):
    open_time = UtcDateTimeField()
    close_time = UtcDateTimeField()

    class Meta:
        model = Candle
        fields = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
                  "close_time", "quote_volume", "trades"]

    def to_representation(self, candle):
        data = super().to_representation(candle)
        for field in ("open", "high", "low", "close", "volume", "quote_volume"):
            data[field] = str(getattr(candle, field))
        return data


class CandleFilterSerializer(serializers.Serializer):
    collector = serializers.SlugField()
    symbol = serializers.CharField(required=False, max_length=32)
    start = UtcDateTimeField(required=False)
    end = UtcDateTimeField(required=False, end_of_day=True)
    format = serializers.ChoiceField(choices=["json", "csv", "api"], required=False)


class CSVRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (bytes, str)) else str(data)


class CandlePagination(pagination.CursorPagination):
    ordering = "open_time"
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


class CandleList(generics.ListAPIView):
    """Stored candles, oldest first; `format=csv` streams all matching rows as CSV."""

    serializer_class = CandleSerializer
    pagination_class = CandlePagination
    renderer_classes = [renderers.JSONRenderer, renderers.BrowsableAPIRenderer, CSVRenderer]

    @extend_schema(parameters=[CandleFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = validated(CandleFilterSerializer, self.request.query_params)
        collector = Collector.objects.filter(slug=filters["collector"]).first()
        if collector is None:
            raise ValidationError({"collector": [f"Unknown collector {filters['collector']!r}."]})
        candles = Candle.objects.filter(collector=collector)
        if "symbol" in filters:
            candles = candles.filter(symbol=filters["symbol"].upper())
        if "start" in filters:
            candles = candles.filter(open_time__gte=filters["start"])
        if "end" in filters:
            candles = candles.filter(open_time__lte=filters["end"])
        return candles.order_by("open_time", "symbol")

    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == "csv":
            return self.stream_csv(self.get_queryset())
        return super().list(request, *args, **kwargs)

    @staticmethod
    def stream_csv(candles):
        columns = ["symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
                   "close_time", "quote_volume", "trades"]

        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())

        def rows():
            yield writer.writerow(columns)
            for row in candles.values_list(*columns).iterator(chunk_size=5000):
                row = list(row)
                row[2], row[8] = iso(row[2]), iso(row[8])
                yield writer.writerow(row)

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="candles.csv"'
        return response
