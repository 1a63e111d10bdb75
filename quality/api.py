"""Data-quality API (see API_CONTRACT.md)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from collectors.api import BAD_REQUEST, ApiView, RejectUnknownFields, collector_by_slug, iso, validated
from quality.services import quality_report, records_validate


class QualityFilterSerializer(serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    symbol = serializers.CharField(required=False, max_length=32)

    def validate_collector(self, slug):
        return collector_by_slug(slug)


class DataQuality(ApiView, APIView):
    @extend_schema(parameters=[QualityFilterSerializer], responses={200: dict, 400: BAD_REQUEST})
    def get(self, request):
        """Totals, validity, duplicates, revisions, completeness and freshness per symbol.

        expected = interval slots from the collector's beginning date to the last closed
        candle minus the slots the exchange had no data for; completeness = stored / expected;
        freshness = seconds since the last stored candle closed (stale beyond two intervals,
        at least two hours); data_quality_score = 100 x (seen - invalid - duplicates) / seen,
        seen = stored + quarantined rows. Computed live in SQL."""
        data = validated(QualityFilterSerializer, request.query_params)
        symbol = data.get("symbol", "").upper() or None
        report = quality_report(collector=data["collector"], symbol=symbol)
        report["start"], report["end"] = iso(report["start"]), iso(report["end"])
        return Response(report)


class ValidateDataSerializer(RejectUnknownFields, serializers.Serializer):
    collector = serializers.CharField(max_length=64)
    records = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, max_length=10_000,
        help_text="Kline arrays as the exchange sends them, or objects with open_time, open, high, "
                  "low, close, volume, close_time, quote_volume, trades, taker_buy_base_volume, "
                  "taker_buy_quote_volume (times in epoch ms; decimals best as strings).")

    def validate_collector(self, slug):
        return collector_by_slug(slug)


class ValidateData(ApiView, APIView):
    @extend_schema(request=ValidateDataSerializer, responses={200: dict, 400: BAD_REQUEST})
    def post(self, request):
        """Check records against the collector's ingest rules without storing them.

        Each result lists every rule the record breaks (`rule`, `message`, and `field` for a
        missing or non-numeric value); ingest would quarantine it under the first."""
        data = validated(ValidateDataSerializer, request.data)
        return Response(records_validate(collector=data["collector"], records=data["records"]))
