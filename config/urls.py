from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from backfills import api as backfills_api
from collectors import api
from config import views
from config.admin import set_site_titles
from config.health import ChecksView
from quality import api as quality_api

set_site_titles(admin.site)

api_admin = [
    path("collect/trigger", api.CollectTrigger.as_view(), name="collect-trigger"),
    path("collect/status", api.CollectStatus.as_view(), name="collect-status"),
    path("runs/", api.RunList.as_view(), name="run-list"),
    path("runs/<int:pk>/", api.RunDetail.as_view(), name="run-detail"),
    path("runs/<int:pk>/cancel/", api.RunCancel.as_view(), name="run-cancel"),
    path("runs/<int:pk>/retry-failed/", api.RunRetryFailed.as_view(), name="run-retry-failed"),
    path("gaps/", backfills_api.Gaps.as_view(), name="gaps"),
    path("data-quality/", quality_api.DataQuality.as_view(), name="data-quality"),
    path("validate-data/", quality_api.ValidateData.as_view(), name="validate-data"),
    path("audits/", quality_api.AuditList.as_view(), name="audit-list"),
    path("audits/<int:pk>/", quality_api.AuditDetail.as_view(), name="audit-detail"),
    path("backfills/", backfills_api.BackfillList.as_view(), name="backfill-list"),
    path("backfills/estimate/", backfills_api.BackfillEstimate.as_view(), name="backfill-estimate"),
    path("backfills/<int:pk>/", backfills_api.BackfillDetail.as_view(), name="backfill-detail"),
    path("backfills/<int:pk>/cancel/", backfills_api.BackfillCancel.as_view(), name="backfill-cancel"),
    path("backfills/<int:pk>/retry-failed/", backfills_api.BackfillRetryFailed.as_view(),
         name="backfill-retry-failed"),
    path("collectors/", api.CollectorList.as_view(), name="collector-list"),
    path("collectors/<slug:slug>/", api.CollectorDetail.as_view(), name="collector-detail"),
    path("candles/", api.CandleList.as_view(), name="candle-list"),
    path("articles/", api.ArticleList.as_view(), name="article-list"),
    path("circuit-breakers/", api.CircuitBreakerList.as_view(), name="circuit-breakers"),
    path("alerts/", api.AlertTest.as_view(), name="alerts"),
    path("logs/", api.LogList.as_view(), name="logs"),
    path("performance/", api.Performance.as_view(), name="performance"),
    path("system/info", api.SystemInfo.as_view(), name="system-info"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/admin/", include(api_admin)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file (?script): no inline script for the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs/swagger_ui.html"),
         name="swagger-ui"),
    path("api/redoc/", views.OfflineRedocView.as_view(url_name="schema"), name="redoc"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("health/checks/", ChecksView.as_view(), name="health-checks"),
    path("metrics", views.metrics, name="metrics"),
    path("", views.home, name="home"),
]

handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
