"""What the benchmark commands share: the emulator allowed, a free port, waiting for the emulator, the memory of a
process tree (bench_collect, bench_scale)."""

import os
import socket
import time

import psutil
import requests
from django.conf import settings
from django.core.management.base import CommandError


def allow_local_emulator():
    """The benchmarks' emulator listens on 127.0.0.1, which the outbound policy refuses unless it
    is listed: list it (keeping the rest of the policy) for this process and what it starts."""
    hosts = list(settings.UPSTREAM_ALLOWED_HOSTS) or ["*"]
    if "127.0.0.1" not in hosts:
        hosts.append("127.0.0.1")
    settings.UPSTREAM_ALLOWED_HOSTS = hosts
    os.environ["UPSTREAM_ALLOWED_HOSTS"] = ",".join(hosts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_emulator(url: str):
    for _ in range(100):
        try:
            requests.get(url + "/api/v3/ping", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise CommandError("emulator did not start")


def tree_rss(pid: int) -> list[float]:
    """RSS in MB of the process and each of its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    rss = []
    for proc in procs:
        try:
            rss.append(proc.memory_info().rss / 2**20)
        except psutil.Error:
            pass
    return rss
