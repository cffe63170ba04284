"""Load test of the HTTP service, side by side with in-process scans (loopback only).

Builds the demo's index in a temporary folder, starts ``mimicry serve`` on a
free loopback port, and sends single-image ``POST /v1/scan`` requests at
concurrency 1, 4 and 16 (a bounded count each); then scans the same images in
process, one ``StyleIndex.scan`` call per image and one call for all of them.
Prints images/s, p50 and p99 latency and errors per level, and the ratios.
With ``--runtime onnx torch`` it serves with each runtime in turn and prints
``service onnx / service torch = R.RR`` at the top concurrency. With
``--history on off`` it serves with the scan history on and off at once
(``MIMICRY_HISTORY``; two servers, bursts of requests to each in turn, so
that other load on the machine weighs on both alike; every request carries
``upload_id`` and ``uploader`` and distinct bytes, so each recorded scan
writes its own preview, as real uploads would) and prints ``service history
on / service history off = R.RR`` at the top concurrency.

    python scripts/load_test.py --requests 64 --runtime onnx torch
    python scripts/load_test.py --requests 32 --history on off --rounds 6
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def distinct(payloads: list, n: int, start: int = 0) -> list:
    """``n`` PNGs cycling through ``payloads``, each made distinct by a text
    chunk before its end (the same pixels, another sha256; ``start`` numbers
    the first, so sets with different starts share no bytes)."""
    out = []
    for k in range(start, start + n):
        name, data = payloads[k % len(payloads)]
        text = b"mimicry\x00" + str(k).encode()
        chunk = len(text).to_bytes(4, "big") + b"tEXt" + text + zlib.crc32(b"tEXt" + text).to_bytes(4, "big")
        out.append((f"{k}-{name}", data[:-12] + chunk + data[-12:]))  # IEND is the last 12 bytes
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far (Linux; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """``mimicry serve`` on ``index`` with ``env`` added, on a free loopback
    port, until :meth:`stop`; :meth:`send` times a burst of scans."""

    def __init__(self, index: Path, env: dict[str, str]) -> None:
        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "mimicry", "serve", "--index", str(index),
                                      "--port", str(port), "--device", "cpu", "--read-only"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "MIMICRY_SCAN_TOKEN": "", **env})
        self.url = f"http://127.0.0.1:{port}"
        self.sent = itertools.count()
        for _ in range(600):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        self.client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))

    def one(self, payloads: list, fields: Callable[[int], dict[str, str]] | None) -> tuple[float, bool]:
        """One single-image scan of the next payload; (seconds, whether it answered 200)."""
        k = next(self.sent)
        name, data = payloads[k % len(payloads)]
        t = time.perf_counter()
        r = self.client.post(self.url + "/v1/scan", files=[("files", (name, data, "image/png"))],
                             data=fields(k) if fields else None)
        return time.perf_counter() - t, r.status_code == 200

    def send(self, level: int, requests: int, payloads: list,
             fields: Callable[[int], dict[str, str]] | None = None) -> tuple[float, float, list[float], int]:
        """``requests`` scans at concurrency ``level``: (wall seconds, the
        server's CPU seconds, latencies, errors)."""
        start, used = time.perf_counter(), cpu_seconds(self.proc.pid)
        with ThreadPoolExecutor(level) as pool:
            results = list(pool.map(lambda _: self.one(payloads, fields), range(requests)))
        return (time.perf_counter() - start, cpu_seconds(self.proc.pid) - used, [r[0] for r in results],
                sum(not r[1] for r in results))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def line(label: str, level: int, requests: int, wall: float, cpu: float, lat: list[float], errors: int) -> str:
    return (f"service {label:<10} concurrency {level:>2}: {requests / wall:6.1f} img/s  p50 "
            f"{statistics.median(lat) * 1000:6.0f} ms  p99 {percentile(lat, 0.99) * 1000:6.0f} ms  "
            f"p99/p50 {percentile(lat, 0.99) / statistics.median(lat):4.1f}  server CPU "
            f"{cpu / requests * 1000:5.1f} ms/img  errors {errors}")


def measure_service(index: Path, payloads: list, levels: list[int], requests: int, label: str,
                    env: dict[str, str], fields: Callable[[int], dict[str, str]] | None = None) -> dict[int, float]:
    """Starts ``mimicry serve`` on ``index`` with ``env`` added, sends ``requests``
    single-image scans at each concurrency of ``levels`` (payloads in turn
    across levels, ``fields(k)`` as the k-th request's form fields);
    images/s per level."""
    served = Served(index, env)
    service: dict[int, float] = {}
    try:
        served.one(payloads, fields)  # warm-up: the model loads on the first scan
        for level in levels:
            wall, cpu, lat, errors = served.send(level, requests, payloads, fields)
            service[level] = requests / wall
            print(line(label, level, requests, wall, cpu, lat, errors))
    finally:
        served.stop()
    return service


def compare_history(index: Path, payloads: list, levels: list[int], args: argparse.Namespace) -> None:
    """Serves with the history on and off at once (two servers, one index),
    and at each concurrency sends them ``args.rounds`` bursts of
    ``args.requests`` scans in turn, alternating which goes first, so that
    whatever else the machine runs weighs on both alike; every request has
    distinct bytes and the hub's ids. Prints each server's images/s (all its
    bursts together), the ratio per level, and the server's CPU per image."""
    n = args.requests * args.rounds * len(levels) + 1
    unique = distinct(payloads, n)  # both servers get the same bytes in the same order
    ids = lambda k: {"upload_id": f"upload-{k}", "uploader": f"user-{k % 50}"}  # noqa: E731
    servers = {h: Served(index, {"MIMICRY_RUNTIME": args.runtime[0], "MIMICRY_HISTORY": h})
               for h in args.history}
    ratio: dict[int, float] = {}
    try:
        for served in servers.values():
            served.one(unique, ids)  # warm-up
        for level in levels:
            totals = {h: [0.0, 0.0, [], 0] for h in servers}
            for r in range(args.rounds):
                for h in (args.history if r % 2 == 0 else list(reversed(args.history))):
                    wall, cpu, lat, errors = servers[h].send(level, args.requests, unique, ids)
                    t = totals[h]
                    t[0], t[1], t[3] = t[0] + wall, t[1] + cpu, t[3] + errors
                    t[2].extend(lat)
            count = args.requests * args.rounds
            for h, (wall, cpu, lat, errors) in totals.items():
                print(line(f"history {h}", level, count, wall, cpu, lat, errors))
            if len(servers) == 2:
                a, b = args.history
                ratio[level] = totals[b][0] / totals[a][0]
                print(f"  concurrency {level}: service history {a} / service history {b} = {ratio[level]:.2f}; "
                      f"server CPU per image {b} / {a} = {totals[b][1] / totals[a][1]:.2f}")
    finally:
        for served in servers.values():
            served.stop()
    if ratio:
        a, b = args.history
        top = max(levels)
        print(f"service history {a} / service history {b} = {ratio[top]:.2f}   (concurrency {top})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--runtime", nargs="+", default=["auto"], choices=["auto", "torch", "onnx"],
                    help="one service per runtime, in turn; with two, their ratio at the top level")
    ap.add_argument("--history", nargs="+", choices=["on", "off"],
                    help="one service per MIMICRY_HISTORY value (on the first runtime), in turn")
    ap.add_argument("--rounds", type=int, default=6,
                    help="with --history: bursts of --requests scans per server and concurrency, alternated")
    args = ap.parse_args()

    from mimicry import StyleIndex
    from mimicry.demo import run_demo

    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        run_demo(out, device="cpu", echo=lambda _: None)
        images = sorted((out / "imitations").glob("*.png")) + sorted((out / "unrelated").glob("*.png"))
        payloads = [(p.name, p.read_bytes()) for p in images]
        if args.history:
            compare_history(out / "index", payloads, levels, args)
            return
        services = {rt: measure_service(out / "index", payloads, levels, args.requests, rt,
                                        {"MIMICRY_RUNTIME": rt}) for rt in args.runtime}
        service = services[args.runtime[0]]

        ix = StyleIndex.open(out / "index", device="cpu", runtime=args.runtime[0])
        from mimicry import ImageBytes

        uploads = [ImageBytes(n, d) for n, d in payloads]
        ix.scan(uploads[:1])
        n = args.requests
        start = time.perf_counter()
        for i in range(n):
            ix.scan([uploads[i % len(uploads)]])
        single = n / (time.perf_counter() - start)
        batch_items = [uploads[i % len(uploads)] for i in range(n)]
        start = time.perf_counter()
        ix.scan(batch_items)
        batched = n / (time.perf_counter() - start)
        print(f"in-process ({args.runtime[0]}) one image per call: {single:6.1f} img/s; "
              f"all in one call: {batched:6.1f} img/s")
        top = max(service)
        print(f"service at concurrency {top} / in-process per image = {service[top] / single:.2f}; "
              f"/ in-process batched = {service[top] / batched:.2f}")
        if len(args.runtime) == 2:
            a, b = args.runtime
            print(f"service {a} / service {b} = {services[a][top] / services[b][top]:.2f}   "
                  f"(concurrency {top})")


if __name__ == "__main__":
    main()
