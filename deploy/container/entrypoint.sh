#!/bin/sh
# web: migrate, then gunicorn; worker: qcluster. exec makes the server PID 1, so SIGTERM
# reaches it (and only it) on `docker stop`.
set -e
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
case "$1" in
  web)
    python manage.py migrate --noinput
    python manage.py sync_schedules
    # --timeout: a CSV export of EXPORT_MAX_ROWS candles must stream within it (README).
    exec gunicorn config.wsgi --bind 0.0.0.0:8000 --workers "${WEB_WORKERS:-3}" \
      --timeout "${WEB_TIMEOUT:-120}" --graceful-timeout 20 --access-logfile - ;;
  worker)
    exec python manage.py qcluster ;;
  *)
    exec "$@" ;;
esac
