"""Helpers for end-to-end tests: real qcluster and gunicorn processes on the test database."""

import os
import signal
import socket
import subprocess
import sys
import threading
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
           "RUN_LEASE_SECONDS": "3", "Q_WORKERS": "2",
           "UPSTREAM_ALLOWED_HOSTS": "127.0.0.1,*", **{k: str(v) for k, v in extra.items()}}
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
        if not self.log.closed:
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
                    f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "-"], env=child_env(**env),
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


class TcpProxy:
    """A TCP relay to a server (the database) that a test can cut and restore, like an outage."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener = None
        self.lock = threading.Lock()
        self.resume()

    def resume(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(50)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self):
        """Refuse new connections and drop the open ones."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.connections:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.connections.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
