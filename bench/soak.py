"""Soak: many concurrent streaming clients against a real server for minutes, with random client
disconnects and bad requests mixed in. Not a CI test: it runs for minutes.

    .venv/bin/python -m bench.soak [--minutes 5] [--clients 48] [--warmup-s 60] [--seed 0]

Starts ``python -m server serve`` (the default model, 127.0.0.1, a free port, one API key) and
first records the answer to each good prompt alone (greedy, or sampled with a fixed seed). Then
every client loops: mostly good requests (streamed, some whole) whose answers must equal those
references; some streams (and whole requests) dropped after a random number of events or
seconds; some bad requests that must get their exact 4xx error. It checks: no unexpected error
(5xx, transport error, wrong shape or content), server RSS growth after the warm-up under 5%,
and the running/waiting gauges back to 0 at the end. Prints one table; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import free_port, sse_lines
from bench.soak_cases import (
    BAD,
    GOOD,
    Answer,
    Good,
    Mismatch,
    answer_of_full,
    answer_of_stream,
    check_error,
    same_answer,
)

log = logging.getLogger("bench")
KEY = "soak-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)


class Server:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "soak-server.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "server", "serve", "--port", str(self.port), "--api-key", KEY]
        self.proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        for _ in range(1500):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if (await client.get(f"{self.url}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("server not ready")

    def close(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code


async def references(client: httpx.AsyncClient, url: str) -> dict[str, Answer]:
    """Each good prompt alone, before any load: the answer it must get under load too."""
    out = {}
    for good in GOOD:
        resp = await client.post(f"{url}{good.path}", json=good.body(stream=False), headers=AUTH)
        resp.raise_for_status()
        out[good.name] = answer_of_full(good, resp.json())
    return out


async def good_stream(client: httpx.AsyncClient, url: str, good: Good, drop_after: int | None) -> Answer | None:
    events: list[str] = []
    async with client.stream("POST", f"{url}{good.path}", json=good.body(stream=True), headers=AUTH) as resp:
        if resp.status_code != 200:
            raise Mismatch(f"{good.name}: status {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in sse_lines(resp):
            if line.startswith("data: "):
                events.append(line[6:])
                if drop_after is not None and len(events) >= drop_after:
                    return None  # leaving the block closes the connection mid-stream
    return answer_of_stream(good, events)


async def good_full(client: httpx.AsyncClient, url: str, good: Good) -> Answer:
    resp = await client.post(f"{url}{good.path}", json=good.body(stream=False), headers=AUTH)
    if resp.status_code != 200:
        raise Mismatch(f"{good.name}: status {resp.status_code}: {resp.text[:200]}")
    return answer_of_full(good, resp.json())


async def one_request(
    client: httpx.AsyncClient,
    url: str,
    rng: random.Random,
    refs: dict[str, Answer],
    tally: Tally,
    args: argparse.Namespace,
) -> None:
    roll = rng.random()
    if roll < args.bad_ratio:
        bad = rng.choice(BAD)
        headers = {"Content-Type": "application/json", **(AUTH if bad.authorized else {})}
        resp = await client.post(f"{url}{bad.path}", content=bad.body, headers=headers)
        check_error(resp.status_code, resp.content, bad)
        tally.counts[f"bad {bad.status} {bad.code}"] += 1
        return
    good = rng.choice(GOOD)
    if roll < args.bad_ratio + args.drop_ratio:
        if rng.random() < 0.75:
            await good_stream(client, url, good, drop_after=rng.randint(1, 6))
            tally.counts["dropped streams"] += 1
        else:
            try:  # the client gives up on a whole request while it is queued or generating
                await asyncio.wait_for(good_full(client, url, good), timeout=rng.uniform(0.05, 2.0))
                tally.counts["good whole (finished before the drop)"] += 1
            except TimeoutError:
                tally.counts["dropped whole requests"] += 1
        return
    if rng.random() < 0.8:
        answer = await good_stream(client, url, good, drop_after=None)
        assert answer is not None
        kind = "good streams"
    else:
        answer = await good_full(client, url, good)
        kind = "good whole"
    same_answer(good, answer, refs[good.name])
    tally.counts[kind] += 1


async def run_client(
    url: str, seed: int, deadline: float, refs: dict[str, Answer], tally: Tally, args: argparse.Namespace
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900, connect=30)) as client:
        while time.monotonic() < deadline:
            try:
                await one_request(client, url, rng, refs, tally, args)
            except Mismatch as exc:
                tally.unexpected.append(str(exc))
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                tally.unexpected.append(f"{type(exc).__name__}: {exc}")


async def sample_rss(pid: int, start: float, deadline: float, tally: Tally, every: float) -> None:
    proc = psutil.Process(pid)
    while time.monotonic() < deadline:
        tally.rss.append((time.monotonic() - start, proc.memory_info().rss))
        await asyncio.sleep(every)
    tally.rss.append((time.monotonic() - start, proc.memory_info().rss))


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await client.get(f"{url}/metrics", headers=AUTH)).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "quantserve_requests_total":
                key = f"requests {s.labels['status']}"
            elif s.name in ("quantserve_num_requests_running", "quantserve_num_requests_waiting"):
                key = s.name.removeprefix("quantserve_num_requests_")
            elif s.name == "quantserve_generation_tokens_total":
                key = "generated tokens"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


async def settle(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """Metrics once the gauges read 0 (or after 60 s, as they are)."""
    for _ in range(120):
        m = await scrape(client, url)
        if m.get("running", 0) == 0 and m.get("waiting", 0) == 0:
            return m
        await asyncio.sleep(0.5)
    return m


def median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0


async def soak(args: argparse.Namespace, workdir: Path) -> bool:
    server = Server(workdir)
    tally = Tally()
    try:
        async with httpx.AsyncClient(timeout=300) as client:
            await server.wait_ready(client)
            refs = await references(client, server.url)
            start = time.monotonic()
            deadline = start + args.minutes * 60
            clients = [
                run_client(server.url, args.seed * 1000 + i, deadline, refs, tally, args) for i in range(args.clients)
            ]
            await asyncio.gather(sample_rss(server.proc.pid, start, deadline, tally, 5.0), *clients)
            elapsed = time.monotonic() - start
            metrics = await settle(client, server.url)
            await asyncio.sleep(2)
            tally.rss.append((time.monotonic() - start, psutil.Process(server.proc.pid).memory_info().rss))
    finally:
        exit_code = server.close()
    warm = [rss for t, rss in tally.rss if args.warmup_s <= t <= args.warmup_s + 15]
    end = [rss for _, rss in tally.rss[-3:]]
    base, final = median(warm), median(end)
    rss = [r for _, r in tally.rss]
    growth = (final - base) / base if base else float("inf")
    checks = {
        "no unexpected errors": not tally.unexpected,
        "RSS growth after warm-up < 5%": growth < 0.05,
        "running and waiting gauges back to 0": metrics.get("running", 0) == 0 and metrics.get("waiting", 0) == 0,
        "no 5xx counted by the server": metrics.get("requests error", 0) == 0,
        "server exited 0 on SIGTERM": exit_code == 0,
    }
    rows = [
        ("duration", f"{elapsed:.0f} s ({args.clients} concurrent clients, warm-up {args.warmup_s:.0f} s)"),
        *((name, str(n)) for name, n in sorted(tally.counts.items())),
        ("unexpected errors", str(len(tally.unexpected))),
        *(("server " + k, f"{v:.0f}") for k, v in sorted(metrics.items())),
        ("RSS after warm-up (median)", f"{base / 2**20:.1f} MiB"),
        ("RSS at the end (median of last 3)", f"{final / 2**20:.1f} MiB"),
        ("RSS growth", f"{growth * 100:+.2f}%"),
        ("RSS min / max over the run", f"{min(rss) / 2**20:.1f} / {max(rss) / 2**20:.1f} MiB"),
        *((f"check: {name}", "PASS" if ok else "FAIL") for name, ok in checks.items()),
    ]
    lines = ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    log.info("\n%s", "\n".join(lines))
    for message in tally.unexpected[:20]:
        log.error("unexpected: %s", message)
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=48, help="concurrent clients (the issue asks for 32-64)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS growth is measured from here")
    parser.add_argument("--bad-ratio", type=float, default=0.10, help="share of bad requests")
    parser.add_argument("--drop-ratio", type=float, default=0.15, help="share of requests the client drops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="quantserve-soak-") as tmp:
        ok = asyncio.run(soak(args, Path(tmp)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
