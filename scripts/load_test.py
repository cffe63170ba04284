"""Load test of the HTTP service, side by side with in-process scans (loopback only).

Builds the demo's index in a temporary folder, starts ``mimicry serve`` on a
free loopback port, and sends single-image ``POST /v1/scan`` requests at
concurrency 1, 4 and 16 (a bounded count each); then scans the same images in
process, one ``StyleIndex.scan`` call per image and one call for all of them.
Prints images/s, p50 and p99 latency and errors per level, and the ratios.
With ``--runtime onnx torch`` it serves with each runtime in turn and prints
``service onnx / service torch = R.RR`` at the top concurrency. With
``--history on off`` it serves with the scan history on and off in turn
(``MIMICRY_HISTORY``; every request carries ``upload_id`` and ``uploader``
and distinct bytes, so each recorded scan writes its own preview, as real
uploads would) and prints ``service history on / service history off =
R.RR``; ``--rounds N`` repeats the pair N times (alternating, against drift)
and prints each round's ratio and their median.

    python scripts/load_test.py --requests 64 --runtime onnx torch
    python scripts/load_test.py --requests 64 --history on off --rounds 3
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


def measure_service(index: Path, payloads: list, levels: list[int], requests: int, label: str,
                    env: dict[str, str], fields: Callable[[int], dict[str, str]] | None = None,
                    cpu: dict[int, float] | None = None) -> dict[int, float]:
    """Starts ``mimicry serve`` on ``index`` with ``env`` added, sends ``requests``
    single-image scans at each concurrency of ``levels`` (payloads in turn
    across levels, ``fields(k)`` as the k-th request's form fields);
    images/s per level (and in ``cpu``, the server's CPU seconds per image)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mimicry", "serve", "--index", str(index),
                             "--port", str(port), "--device", "cpu", "--read-only"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MIMICRY_SCAN_TOKEN": "", **env})
    url = f"http://127.0.0.1:{port}"
    service: dict[int, float] = {}
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))
        counter = itertools.count()

        def one(_: int) -> tuple[float, bool]:
            k = next(counter)
            name, data = payloads[k % len(payloads)]
            t = time.perf_counter()
            r = client.post(url + "/v1/scan", files=[("files", (name, data, "image/png"))],
                            data=fields(k) if fields else None)
            return time.perf_counter() - t, r.status_code == 200

        one(0)  # warm-up: the model loads on the first scan
        for level in levels:
            start, used = time.perf_counter(), cpu_seconds(proc.pid)
            with ThreadPoolExecutor(level) as pool:
                results = list(pool.map(one, range(requests)))
            wall = time.perf_counter() - start
            per_image = (cpu_seconds(proc.pid) - used) / requests
            if cpu is not None:
                cpu[level] = per_image
            lat = [r[0] for r in results]
            errors = sum(not r[1] for r in results)
            service[level] = requests / wall
            print(f"service {label:<10} concurrency {level:>2}: {service[level]:6.1f} img/s  p50 "
                  f"{statistics.median(lat) * 1000:6.0f} ms  p99 {percentile(lat, 0.99) * 1000:6.0f} ms  "
                  f"p99/p50 {percentile(lat, 0.99) / statistics.median(lat):4.1f}  server CPU {per_image * 1000:5.1f} ms/img  "
                  f"errors {errors}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return service


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--runtime", nargs="+", default=["auto"], choices=["auto", "torch", "onnx"],
                    help="one service per runtime, in turn; with two, their ratio at the top level")
    ap.add_argument("--history", nargs="+", choices=["on", "off"],
                    help="one service per MIMICRY_HISTORY value (on the first runtime), in turn")
    ap.add_argument("--rounds", type=int, default=1, help="with --history: times the services are measured")
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


def compare_history(index: Path, payloads: list, levels: list[int], args: argparse.Namespace) -> None:
    """Serves with the history on and off in turn (``args.rounds`` times),
    every request with distinct bytes and the hub's ids; prints the ratio at
    the top concurrency per round and the median."""
    n = args.requests * len(levels) + 1
    ids = lambda k: {"upload_id": f"upload-{k}", "uploader": f"user-{k % 50}"}  # noqa: E731
    top, ratios, cpu_ratios = max(levels), [], []
    for r in range(args.rounds):
        order = args.history if r % 2 == 0 else list(reversed(args.history))
        unique = distinct(payloads, n, start=r * n)  # new bytes each round: every preview is new
        cpu: dict[str, dict[int, float]] = {h: {} for h in order}
        got = {h: measure_service(index, unique, levels, args.requests, f"history {h}",
                                  {"MIMICRY_RUNTIME": args.runtime[0], "MIMICRY_HISTORY": h}, ids, cpu[h])
               for h in order}
        if len(args.history) == 2:
            a, b = args.history
            ratios.append(got[a][top] / got[b][top])
            cpu_ratios.append(cpu[b][top] / cpu[a][top] if cpu[a][top] else float("nan"))
            print(f"round {r + 1}: service history {a} / service history {b} = {ratios[-1]:.2f}; server CPU "
                  f"per image {b} / {a} = {cpu_ratios[-1]:.2f}   (concurrency {top})")
    if ratios:
        a, b = args.history
        print(f"service history {a} / service history {b} = {statistics.median(ratios):.2f}   "
              f"(concurrency {top}, median of {len(ratios)} rounds)")
        print(f"server CPU per image, history {b} / history {a} = {statistics.median(cpu_ratios):.2f}   "
              f"(concurrency {top}, median: what throughput would be on cores the service has to itself)")


if __name__ == "__main__":
    main()
