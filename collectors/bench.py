"""What the benchmark commands share: the emulator allowed, a free port, seeded holes and the
raw candle INSERT (bench_gaps, bench_coverage), waiting for the emulator, the memory of a
process tree (bench_collect, bench_scale)."""

import os
import random
import resource
import socket
import time
from itertools import chain, islice

import psutil
import requests
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection

from collectors import storage


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


HOLES_SEED = 20140101
# Constant decimal strings: the database parses them, their values do not matter here.
MIDDLE = ("100.00000000", "101.00000000", "99.00000000", "100.50000000", "12.34500000")
TAIL = ("1240.67250000", 42, "6.00000000", "603.00000000")


def make_holes(*, symbols: int, slots: int, holes_per_symbol: int) -> list[list[tuple[int, int]]]:
    """Per symbol, sorted half-open [first, last) hour indices with no candle, never touching.

    Seeded, so the same parameters always give the same holes. The first symbol starts with a
    hole, the second ends with one, and the last (of three or more) has none."""
    rng = random.Random(f"{HOLES_SEED}:{symbols}:{slots}:{holes_per_symbol}")
    result = []
    for i in range(symbols):
        if holes_per_symbol <= 0 or (symbols >= 3 and i == symbols - 1):
            result.append([])
            continue
        count = rng.randint(max(1, holes_per_symbol // 2), max(1, holes_per_symbol * 3 // 2))
        lengths = [hole_length(rng) for _ in range(count)]
        while lengths and sum(lengths) + len(lengths) > slots // 2:
            lengths.pop()
        lengths = lengths[:max(slots - sum(lengths) - 1, 0)]
        stored = slots - sum(lengths)
        # Hole j goes after cuts[j] stored candles; distinct cuts keep a candle between holes.
        cuts = rng.sample(range(1, stored), len(lengths))
        if cuts and i == 0:
            cuts[0] = 0
        if cuts and i == 1:
            cuts[0] = stored
        holes, skipped = [], 0
        for cut, length in zip(sorted(cuts), lengths, strict=False):
            holes.append((cut + skipped, cut + skipped + length))
            skipped += length
        result.append(holes)
    return result


def hole_length(rng: random.Random) -> int:
    """Hours: half are single candles, the rest up to a day or one to four days."""
    r = rng.random()
    if r < 0.5:
        return 1
    return rng.randint(2, 23) if r < 0.8 else rng.randint(24, 96)


def stored_indices(holes, slots):
    """The stored hour indices, in order: everything outside the holes."""
    edges = [0, *chain.from_iterable(holes), slots]
    return chain.from_iterable(range(edges[k], edges[k + 1]) for k in range(0, len(edges), 2))


def batched(iterable, size):
    it = iter(iterable)
    while chunk := list(islice(it, size)):
        yield chunk


def insert_sql() -> str:
    cols = storage.COLUMNS
    quote = "`{}`" if connection.vendor == "mysql" else '"{}"'
    return (f"INSERT INTO collectors_candle ({', '.join(quote.format(c) for c in cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) so the next peak is the next phase's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
