"""Load test of the HTTP service, side by side with in-process scans (loopback only).

Builds the demo's index in a temporary folder, starts ``mimicry serve`` on a
free loopback port, and sends single-image ``POST /v1/scan`` requests at
concurrency 1, 4 and 16 (a bounded count each); then scans the same images in
process, one ``StyleIndex.scan`` call per image and one call for all of them.
Prints images/s, p50 and p99 latency and errors per level, and the ratios.
With ``--runtime onnx torch`` it serves with each runtime in turn and prints
``service onnx / service torch = R.RR`` at the top concurrency.

    python scripts/load_test.py --requests 64 --runtime onnx torch
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure_service(index: Path, payloads: list, levels: list[int], requests: int, label: str,
                    env: dict[str, str]) -> dict[int, float]:
    """Starts ``mimicry serve`` on ``index`` with ``env`` added, sends ``requests``
    single-image scans at each concurrency of ``levels``; images/s per level."""
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

        def one(i: int) -> tuple[float, bool]:
            name, data = payloads[i % len(payloads)]
            t = time.perf_counter()
            r = client.post(url + "/v1/scan", files=[("files", (name, data, "image/png"))])
            return time.perf_counter() - t, r.status_code == 200

        one(0)  # warm-up: the model loads on the first scan
        for level in levels:
            start = time.perf_counter()
            with ThreadPoolExecutor(level) as pool:
                results = list(pool.map(one, range(requests)))
            wall = time.perf_counter() - start
            lat = [r[0] for r in results]
            errors = sum(not r[1] for r in results)
            service[level] = requests / wall
            print(f"service {label:<6} concurrency {level:>2}: {service[level]:6.1f} img/s  p50 "
                  f"{statistics.median(lat) * 1000:6.0f} ms  p99 {percentile(lat, 0.99) * 1000:6.0f} ms  "
                  f"p99/p50 {percentile(lat, 0.99) / statistics.median(lat):4.1f}  errors {errors}")
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
    args = ap.parse_args()

    from mimicry import StyleIndex
    from mimicry.demo import run_demo

    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        run_demo(out, device="cpu", echo=lambda _: None)
        images = sorted((out / "imitations").glob("*.png")) + sorted((out / "unrelated").glob("*.png"))
        payloads = [(p.name, p.read_bytes()) for p in images]
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
