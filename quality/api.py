"""Data-quality API (see API_CONTRACT.md)."""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from collectors.api import collector_by_slug
from collectors.services import symbol_known
from config.api import BAD_REQUEST, NOT_FOUND, ApiView, RejectUnknownFields, validated, who
from quality.models import DriftAudit
from quality.services import audit_start, quality_report_served, records_validate


class QualityFilterSerializer(serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    symbol = serializers.CharField(required=False, max_length=32)
    live = serializers.BooleanField(required=False, default=False,
                                    help_text="Compute now even when a current snapshot exists.")

    def validate_collector(self, slug):
        return collector_by_slug(slug)

    def validate(self, attrs):
        symbol = attrs.get("symbol", "").strip().upper()
        if symbol and not symbol_known(collector=attrs["collector"], symbol=symbol):
            raise serializers.ValidationError({"symbol": [
                f"Not a symbol of {attrs['collector'].slug} (and nothing stored for it); its symbols: "
                f"{', '.join(attrs['collector'].symbols[:50]) or 'chosen when a run starts (top_n)'}."]})
        return attrs


class DataQuality(ApiView, APIView):
    @extend_schema(parameters=[QualityFilterSerializer], responses={200: dict, 400: BAD_REQUEST})
    def get(self, request):
        """Totals, validity, duplicates, revisions, completeness and freshness per symbol.

        expected = interval slots from the collector's beginning date to the last closed
        candle minus the slots the exchange had no data for; completeness = stored / expected;
        freshness = seconds since the last stored candle closed (stale beyond two intervals,
        at least two hours); data_quality_score = 100 x (seen - invalid - duplicates) / seen,
        seen = stored + quarantined rows.

        Event collectors (news; `records_kind` = `events`) have no expected count: per feed,
        `records`, `latest` (newest entry), `freshness_seconds` (stale beyond
        EVENT_STALE_AFTER_HOURS), `last_collected_at`, `last_status`/`last_error` (the latest
        read), `invalid_records` and `duplicate_records` (entries read again and skipped);
        `completeness_ratio` is null and score = 100 x stored / (stored + quarantined).

        `source` says where the figures come from: `snapshot` (the latest scheduled one, served
        while younger than QUALITY_SNAPSHOT_MAX_AGE_SECONDS and no run or backfill of the
        collector finished or is running since it was taken) or `live` (computed in SQL now:
        always with `symbol` or `live=true`); `computed_at` says when."""
        data = validated(QualityFilterSerializer, request.query_params)
        symbol = data.get("symbol", "").upper() or None
        return Response(quality_report_served(collector=data["collector"], symbol=symbol, live=data["live"]))


class ValidateDataSerializer(RejectUnknownFields, serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    records = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, max_length=10_000,
        help_text="Kline arrays as the exchange sends them, or objects with open_time, open, high, "
                  "low, close, volume, close_time, quote_volume, trades, taker_buy_base_volume, "
                  "taker_buy_quote_volume (times in epoch ms; decimals best as strings).")

    def validate_collector(self, slug):
        return collector_by_slug(slug, candles_for="kline validation")


class ValidateData(ApiView, APIView):
    @extend_schema(request=ValidateDataSerializer, responses={200: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Check records against the collector's ingest rules without storing them.

        Each result lists every rule the record breaks (`rule`, `message`, and `field` for a
        missing or non-numeric value); ingest would quarantine it under the first."""
        data = validated(ValidateDataSerializer, request.data)
        return Response(records_validate(collector=data["collector"], records=data["records"]))


class AuditCreateSerializer(RejectUnknownFields, serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    sample_size = serializers.IntegerField(min_value=1, max_value=100_000, required=False,
                                           help_text="Stored candles to re-fetch (default AUDIT_SAMPLE_SIZE).")

    def validate_collector(self, slug):
        return collector_by_slug(slug, candles_for="drift audits")


class AuditSerializer(serializers.ModelSerializer):
    collector = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    audit_id = serializers.IntegerField(source="pk", read_only=True)

    class Meta:
        model = DriftAudit
        fields = ["audit_id", "collector", "status", "sample_size", "sampled", "differing", "unavailable",
                  "differences", "requests", "triggered_by", "error", "created_at", "started_at", "finished_at"]


class AuditList(ApiView, APIView):
    @extend_schema(request=AuditCreateSerializer, responses={202: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Start a drift audit: re-fetch a random sample of stored candles and compare them
        field by field with what the source serves now. Runs on a worker, inside the shared
        weight budget; poll GET /api/admin/audits/{id}/."""
        data = validated(AuditCreateSerializer, request.data)
        audit = audit_start(collector=data["collector"],
                            sample_size=data.get("sample_size") or settings.AUDIT_SAMPLE_SIZE,
                            triggered_by=who(request))
        return Response({"audit_id": audit.pk, "status": "started"}, status=status.HTTP_202_ACCEPTED)


class AuditDetail(ApiView, APIView):
    @extend_schema(responses={200: AuditSerializer, 404: NOT_FOUND})
    def get(self, request, pk):
        """An audit's state; when complete: sampled, differing (candles), unavailable (sampled
        candles the source no longer serves) and every differing field."""
        return Response(AuditSerializer(get_object_or_404(DriftAudit, pk=pk)).data)
