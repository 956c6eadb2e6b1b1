"""Load test of ``attngrad serve``: N concurrent clients against a local server.

    python benchmarks/serve_load.py [--clients 32] [--duration 60] [--max-requests N]
                                    [--model PATH] [--threads 1] [--json out.json]

Starts ``attngrad serve`` on 127.0.0.1 (a free port) in a subprocess, warms it up,
then runs ``--clients`` asyncio clients (httpx) until ``--duration`` seconds pass or
``--max-requests`` requests were sent. The mix: top-5 of a sample (mostly cache hits),
explanations of a sample for random classes and method pairs (mostly model work),
uploads of distinct images (decode + model work), and light GETs. A client that gets
``503`` waits the server's ``Retry-After`` (capped at 2 s; ``--no-backoff`` to retry at
once) and counts it.

Prints requests/s, p50/p95/p99 latency of accepted requests, counts by status, transport
errors and the server's memory (RSS, from /proc) growth from after the warm-up to the
end. Exit code 1 when the target is missed: any 5xx other than 503, any other failed
request (4xx, transport error), or memory growth >= ``--max-growth-mb`` (200).
Loopback only: the server is always bound to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from attngrad.demo import asset_image

SAMPLES = ["el1", "catdog", "n01871265_tusker", "n02391049_zebra", "n01944390_snail", "n01608432_kite"]
METHOD_SETS = ["gae,complete", "complete", "gae,complete,absolute", "rollout,complete", "attn_gradcam"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload_variants(n: int, seed: int) -> list[bytes]:
    """``n`` distinct JPEGs (el1 with a little noise): each upload is new content, so it is decoded and explained."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.open(asset_image("el1.jpg")).convert("RGB"), dtype=np.int16)
    out = []
    for _ in range(n):
        noisy = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from attngrad.cli import main; main()", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--queue-size", str(args.queue_size)]
    if args.model:
        cmd += ["--model", args.model]
    if args.device:
        cmd += ["--device", args.device]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    return subprocess.Popen(cmd, env=env)


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with code {proc.returncode}")
            try:
                if (await client.get("/api/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit("the server did not start in time")


class Load:
    """Shared state of the clients: the request budget, results, and the request mix."""

    def __init__(self, args: argparse.Namespace, uploads: list[bytes], classes: int):
        self.args = args
        self.uploads = uploads
        self.classes = classes
        self.sent = 0
        self.status: Counter[int] = Counter()
        self.kinds: Counter[str] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.latency_ok: list[float] = []
        self.deadline = 0.0

    def request(self, rng: random.Random) -> tuple[str, str, dict, dict | None]:
        """(kind, path, form data, files) of one random request."""
        r = rng.random()
        if r < 0.35:
            return "predict", "/api/predict", {"sample": rng.choice(SAMPLES)}, None
        if r < 0.80:
            form = {"sample": rng.choice(SAMPLES), "methods": rng.choice(METHOD_SETS)}
            form["target"] = str(rng.randrange(self.classes)) if rng.random() < 0.7 else f"top{rng.randint(1, 5)}"
            if rng.random() < 0.2:
                form["contrast"] = "top2" if form["target"] != "top2" else "top3"
            return "explain", "/api/explain", form, None
        if r < 0.92:
            data = rng.choice(self.uploads)
            return "upload", "/api/explain", {"methods": "gae,complete"}, {"file": ("load.jpg", data, "image/jpeg")}
        return "get", rng.choice(["/api/info", "/api/classes?search=dog", "/api/samples", "/api/health"]), {}, None

    async def client(self, base: str, seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while time.monotonic() < self.deadline and self.sent < self.args.max_requests:
                self.sent += 1
                kind, path, form, files = self.request(rng)
                start = time.perf_counter()
                try:
                    if kind == "get":
                        resp = await http.get(path)
                    else:
                        resp = await http.post(path, data=form, files=files)
                except httpx.TransportError as err:
                    self.transport_errors[type(err).__name__] += 1
                    continue
                elapsed = time.perf_counter() - start
                self.status[resp.status_code] += 1
                self.kinds[f"{kind} {resp.status_code}"] += 1
                if resp.status_code < 300:
                    self.latency_ok.append(elapsed)
                elif resp.status_code == 503 and not self.args.no_backoff:
                    wait = min(2.0, float(resp.headers.get("retry-after", "1")))
                    await asyncio.sleep(wait * rng.uniform(0.5, 1.0))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run(args: argparse.Namespace) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            classes = (await http.get("/api/info")).json()["num_classes"]
            for sid in SAMPLES:  # warm-up: every code path once
                await http.post("/api/predict", data={"sample": sid})
                await http.post("/api/explain", data={"sample": sid, "methods": "gae,complete"})
        rss_start = rss_mb(proc.pid)
        load = Load(args, upload_variants(args.uploads, args.seed), classes)
        rss_peak = rss_start
        load.deadline = time.monotonic() + args.duration
        began = time.perf_counter()
        clients = [asyncio.create_task(load.client(base, args.seed * 1000 + i)) for i in range(args.clients)]
        give_up = load.deadline + 2 * 120  # the run, plus two request timeouts for the last answers
        while not all(c.done() for c in clients):
            if time.monotonic() > give_up:
                for c in clients:
                    c.cancel()
                raise SystemExit("the clients did not finish in time (the server stopped answering)")
            await asyncio.sleep(0.5)
            rss_peak = max(rss_peak, rss_mb(proc.pid))
        await asyncio.gather(*clients)
        wall = time.perf_counter() - began
        rss_end = rss_mb(proc.pid)
        async with httpx.AsyncClient(base_url=base) as http:
            health = (await http.get("/api/health")).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    total = sum(load.status.values()) + sum(load.transport_errors.values())
    ok = sum(n for s, n in load.status.items() if s < 300)
    bad_5xx = {s: n for s, n in load.status.items() if s >= 500 and s != 503}
    failed = sum(n for s, n in load.status.items() if 300 <= s < 500) + sum(load.transport_errors.values())
    growth = rss_end - rss_start
    return {
        "clients": args.clients,
        "duration_s": round(wall, 2),
        "requests": total,
        "requests_per_s": round(total / wall, 2),
        "accepted_per_s": round(ok / wall, 2),
        "latency_ms_accepted": {
            "p50": round(1000 * percentile(load.latency_ok, 50), 1),
            "p95": round(1000 * percentile(load.latency_ok, 95), 1),
            "p99": round(1000 * percentile(load.latency_ok, 99), 1),
            "mean": round(1000 * statistics.fmean(load.latency_ok), 1) if load.latency_ok else None,
        },
        "status": dict(sorted(load.status.items())),
        "by_kind": dict(sorted(load.kinds.items())),
        "transport_errors": dict(load.transport_errors),
        "server_rss_mb": {"after_warmup": round(rss_start, 1), "peak": round(rss_peak, 1), "end": round(rss_end, 1)},
        "memory_growth_mb": round(growth, 1),
        "server_health": health,
        "target_met": not bad_5xx and failed == 0 and growth < args.max_growth_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--model", default=None, help="--model for attngrad serve (default: shipped ViT-Ti)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=64, help="distinct upload images")
    parser.add_argument("--no-backoff", action="store_true", help="retry at once after 503")
    parser.add_argument("--max-growth-mb", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lat = result["latency_ms_accepted"]
    mem = result["server_rss_mb"]
    print(f"clients {result['clients']}, {result['duration_s']} s, {result['requests']} requests")
    print(f"requests/s {result['requests_per_s']} (accepted {result['accepted_per_s']}/s)")
    print(f"latency of accepted requests: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    print(f"status counts: {result['status']}; transport errors: {result['transport_errors'] or 0}")
    print(f"by kind: {result['by_kind']}")
    print(f"server RSS: {mem['after_warmup']} MB after warm-up, peak {mem['peak']} MB, end {mem['end']} MB "
          f"-> growth {result['memory_growth_mb']} MB")
    print(f"target (no 5xx but 503, no failed request, growth < {args.max_growth_mb:.0f} MB): "
          f"{'met' if result['target_met'] else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["target_met"] else 1)


if __name__ == "__main__":
    main()
