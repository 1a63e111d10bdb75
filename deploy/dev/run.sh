#!/usr/bin/env bash
# The demo: exchange emulator + web (gunicorn) + django-q2 worker, stopped together by Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
WEB_PORT=${WEB_PORT:-8000}
EMULATOR_PORT=${EMULATOR_PORT:-9100}
export DEBUG=${DEBUG:-true} LOG_FORMAT=${LOG_FORMAT:-console}
# The emulator is on 127.0.0.1, which collectors may not call unless it is listed; `*` keeps
# any public host allowed (collectors.outbound, SECURITY.md).
export UPSTREAM_ALLOWED_HOSTS=${UPSTREAM_ALLOWED_HOSTS:-127.0.0.1,*}
mkdir -p .demo
# One directory for the web server's and the workers' in-process metrics, empty at each start.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PWD/.demo/prometheus}
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
# The demo's environment, for manage.py commands and extra workers started by hand: a process
# with another SECRET_KEY cannot read (and so drops) the tasks these processes queue.
{
  for name in DEBUG SECRET_KEY DATABASE_URL REDIS_URL UPSTREAM_ALLOWED_HOSTS PROMETHEUS_MULTIPROC_DIR; do
    if [ -n "${!name:-}" ]; then printf "%s=%q\n" "$name" "${!name}"; fi
  done
} > .demo/env

creds=$($BIN/python manage.py seed_demo --exchange-url "http://127.0.0.1:$EMULATOR_PORT")
$BIN/python manage.py sync_schedules > /dev/null
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "Stopping..."
  # qcluster must get one SIGTERM on its main process only (a signal to its whole process
  # group can hang it); gunicorn and the emulator stop cleanly on SIGTERM too.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM EXIT

# Each child gets its own session (setsid), so Ctrl-C or a SIGTERM to this script's process
# group reaches only this script, which then stops each child the way it wants to be stopped.
setsid $BIN/python manage.py run_exchange_emulator --port "$EMULATOR_PORT" > .demo/emulator.log 2>&1 & pids+=($!)
setsid $BIN/gunicorn config.wsgi --bind "127.0.0.1:$WEB_PORT" --workers 2 --timeout 120 --graceful-timeout 20 \
  --access-logfile - > .demo/web.log 2>&1 & pids+=($!)
setsid $BIN/python manage.py qcluster > .demo/worker.log 2>&1 & pids+=($!)
sleep 2

$BIN/python - "$creds" "$WEB_PORT" "$EMULATOR_PORT" <<'PY'
import json, sys
c, web, emu = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
base = f"http://127.0.0.1:{web}"
print(f"""
  Collectors demo is running (Ctrl-C stops everything; logs in .demo/*.log)

  Admin        {base}/admin/        user: {c['username']}   password: {c['password']}
  API docs     {base}/api/docs/
  Health       {base}/health   {base}/ready   {base}/metrics
  Emulator     http://127.0.0.1:{emu}/api/v3/ping  (offline Binance-compatible exchange)
               http://127.0.0.1:{emu}/feeds/markets.rss  research.atom  broken.rss  (news feeds)
  Collectors   {c['collector']} (hourly candles)   {c['news_collector']} (news, every 10 minutes)
  API key      {c['api_key']}
  By hand      set -a; . .demo/env; set +a    (the demo's environment, before manage.py commands)

  Try:  curl -s -X POST -H "X-API-Key: {c['api_key']}" -H 'Content-Type: application/json' \\
          -d '{{"mode": "backward", "collector": "{c['collector']}"}}' {base}/api/admin/collect/trigger
        curl -s -H "X-API-Key: {c['api_key']}" {base}/api/admin/collect/status
        curl -s -H "X-API-Key: {c['api_key']}" "{base}/api/admin/data-quality/?collector={c['news_collector']}"
""")
PY
wait -n "${pids[@]}" || true
echo "A process exited unexpectedly; see .demo/*.log"
