"""Backfill API (see API_CONTRACT.md): create with an estimate, list, detail, cancel, retry."""

from datetime import timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from backfills import services
from backfills.models import BackfillChunk, BackfillJob
from collectors import services as collect
from collectors.api import collector_by_slug
from collectors.times import iso
from config.api import (
    BAD_REQUEST,
    NOT_FOUND,
    ApiView,
    NotActiveSerializer,
    RejectUnknownFields,
    UtcDateTimeField,
    validated,
    who,
)


class BackfillRequestSerializer(RejectUnknownFields, serializers.Serializer):
    """What to fill: defaults are the collector's beginning date, the end of yesterday, all symbols."""

    collector = serializers.CharField(max_length=64)
    start_date = UtcDateTimeField(required=False, allow_null=True)
    end_date = UtcDateTimeField(required=False, allow_null=True, end_of_day=True,
                                help_text="Inclusive; a bare date means the end of that day.")
    symbols = serializers.ListField(child=serializers.CharField(max_length=32), required=False,
                                    allow_null=True, max_length=5000)
    force = serializers.BooleanField(required=False, default=False,
                                     help_text="Fetch and overwrite even where data exists.")

    def validate_collector(self, slug):
        return collector_by_slug(slug, candles_for="backfills")


def _estimate_body(estimate: dict) -> dict:
    body = {k: v for k, v in estimate.items() if not k.startswith("_")}
    body["start"], body["end"] = iso(estimate["start"]), iso(estimate["end"])
    return body


def _plan(request, create: bool):
    data = validated(BackfillRequestSerializer, request.data)
    collector = data["collector"]
    kwargs = {"collector": collector, "start": data.get("start_date"), "end": data.get("end_date"),
              "force": data["force"]}
    symbols = collect.symbols_validate(collector=collector, symbols=data.get("symbols"))
    if create:
        return services.backfill_create(symbols=symbols, created_by=who(request), **kwargs)
    return None, services.backfill_estimate(symbols=symbols, **kwargs)


class BackfillSerializer(serializers.ModelSerializer):
    collector = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    start = UtcDateTimeField()
    end = UtcDateTimeField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = BackfillJob
        fields = ["id", "collector", "status", "start", "end", "symbols", "force", "estimated_records",
                  "estimated_requests", "created_by", "error", "created_at", "started_at",
                  "finished_at", "progress"]

    def get_progress(self, job) -> dict:
        return job.progress()


class BackfillDetailSerializer(BackfillSerializer):
    per_symbol = serializers.SerializerMethodField()
    failed_chunks = serializers.SerializerMethodField()

    class Meta(BackfillSerializer.Meta):
        fields = BackfillSerializer.Meta.fields + ["per_symbol", "failed_chunks"]

    def get_per_symbol(self, job) -> list[dict]:
        return job.symbol_progress()

    def get_failed_chunks(self, job) -> list[dict]:
        bad = job.chunks.filter(status__in=[BackfillChunk.FAILED, BackfillChunk.PARTIAL])
        return [{"id": c.pk, "symbol": c.symbol, "start": iso(c.start), "end": iso(c.end),
                 "status": c.status, "error": c.error, "missing_ranges": c.missing_ranges}
                for c in bad[:200]]


class BackfillList(ApiView, generics.ListCreateAPIView):
    """Backfill jobs, newest first (GET); create one and start it (POST)."""

    serializer_class = BackfillSerializer
    queryset = BackfillJob.objects.select_related("collector")

    @extend_schema(request=BackfillRequestSerializer, responses={202: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Create a backfill: returns its estimate at once and starts it on the workers."""
        job, estimate = _plan(request, create=True)
        body = {"task_id": f"backfill-{job.pk}", "backfill_id": job.pk, "status": "started",
                "message": "Backfill operation started", **_estimate_body(estimate),
                # The contract's inclusive form (last second wanted); `start`/`end` are half-open.
                "start_date": iso(job.start), "end_date": iso(job.end - timedelta(seconds=1))}
        return Response(body, status=status.HTTP_202_ACCEPTED)


class BackfillEstimate(ApiView, APIView):
    @extend_schema(request=BackfillRequestSerializer, responses={200: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Dry run: the missing ranges per symbol, records, requests, weight and duration."""
        _, estimate = _plan(request, create=False)
        return Response(_estimate_body(estimate))


class BackfillDetail(ApiView, generics.RetrieveAPIView):
    """One backfill with progress per symbol and its failed chunks."""

    serializer_class = BackfillDetailSerializer
    queryset = BackfillJob.objects.select_related("collector")


class BackfillCancel(ApiView, APIView):
    @extend_schema(request=None, responses={200: BackfillDetailSerializer, 404: NOT_FOUND,
                                            409: NotActiveSerializer})
    def post(self, request, pk):
        """Stop a queued or running backfill; data already stored stays. 409 if it already ended."""
        job = generics.get_object_or_404(BackfillJob, pk=pk)
        services.backfill_cancel(job=job)
        return Response(BackfillDetailSerializer(job).data)


class BackfillRetryFailed(ApiView, APIView):
    @extend_schema(request=None, responses={202: dict, 404: NOT_FOUND, 409: NotActiveSerializer})
    def post(self, request, pk):
        """Run again only the failed, partial or cancelled chunks of a finished backfill (409
        while it is queued or running)."""
        job = generics.get_object_or_404(BackfillJob, pk=pk)
        count = services.backfill_retry_failed(job=job)
        return Response({"backfill_id": job.pk, "status": "started", "chunks": count,
                         "message": f"Retrying {count} chunk(s)."}, status=status.HTTP_202_ACCEPTED)


class GapsFilterSerializer(serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    symbol = serializers.CharField(required=False, max_length=32)
    start = UtcDateTimeField(required=False)
    end = UtcDateTimeField(required=False, end_of_day=True)

    def validate_collector(self, slug):
        return collector_by_slug(slug, candles_for="gap reports")


class Gaps(ApiView, APIView):
    @extend_schema(parameters=[GapsFilterSerializer], responses={200: dict, 400: BAD_REQUEST})
    def get(self, request):
        """Per symbol, the ranges missing from the database ("missing": a gap fill or backfill
        will fetch them) apart from those the exchange answered empty ("no_data": not listed
        yet, delisted, outages; not asked again). Default window: beginning date to yesterday.
        Each list holds at most the first 1,000 ranges; `missing_ranges_total` and
        `no_data_ranges_total` count them all, `missing_candles` and `no_data_candles` the candles."""
        data = validated(GapsFilterSerializer, request.query_params)
        collector = data["collector"]
        symbols = collect.symbols_validate(collector=collector, symbols=[data["symbol"]], field="symbol") \
            if "symbol" in data else None
        report = services.gaps_report(collector=collector, start=data.get("start"),
                                      end=data.get("end"), symbols=symbols)
        return Response(report)
