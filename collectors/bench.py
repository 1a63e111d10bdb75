"""What the benchmark commands share: a free port, waiting for the emulator, the memory of a
process tree (bench_collect, bench_scale)."""

import socket
import time

import psutil
import requests
from django.core.management.base import CommandError


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
