"""Helpers for end-to-end tests: real qcluster and gunicorn processes on the test database."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the test database this pytest process uses, for child processes."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    if connection.vendor == "mysql":
        password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
        return f"mysql://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 3306}/{s['NAME']}"
    raise NotImplementedError(connection.vendor)


def child_env(**extra) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url(), "LOG_FORMAT": "json", "LOG_LEVEL": "info",
           "RUN_LEASE_SECONDS": "3", "Q_WORKERS": "2", **{k: str(v) for k, v in extra.items()}}
    env.pop("REDIS_URL", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, args, *, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def kill_group(self):
        """SIGKILL the process and every child: what an OOM kill or a lost machine does."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def stop(self, timeout=30):
        """SIGTERM to the main process only (a group-wide SIGTERM can hang qcluster)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")


def start_qcluster(tmp_path, name="qcluster", *, wait=True, **env) -> Process:
    proc = Process([sys.executable, "manage.py", "qcluster"], env=child_env(**env),
                   log_path=tmp_path / f"{name}.log")
    if wait:  # until its workers take tasks
        wait_for(lambda: "] running." in proc.output() or proc.popen.poll() is not None,
                 timeout=30, what=f"{name} to start")
        assert proc.popen.poll() is None, proc.output()[-3000:]
    return proc


def start_web(tmp_path, port, **env) -> Process:
    proc = Process([str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind",
                    f"127.0.0.1:{port}", "--workers", "2"], env=child_env(**env),
                   log_path=tmp_path / "web.log")
    wait_for(lambda: _port_open(port), timeout=20, what="gunicorn to listen")
    return proc


def _port_open(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate, *, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
