"""Prometheus metrics: one private registry per app, built in ``create_app``.

Names follow Prometheus conventions (``quantserve_`` prefix, base units in the name, counters end
in ``_total``); labels come from a closed set. Per-request figures are recorded by
``server.runtime.observe`` around the backend stream; engine load (running, waiting, KV-cache usage) and
the model info are read from the backends at scrape time by ``EngineCollector``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from backends.base import Backend
from server.runtime.residency import Resident

MODEL_LABELS = ("model", "backend")
REQUEST_LABELS = (*MODEL_LABELS, "endpoint", "status", "finish_reason")

# From a few ms (GPU) to tens of seconds (a long prompt on a 2-core CPU).
TTFT_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1,
    1.5,
    2.5,
    5,
    7.5,
    10,
    20,
    40,
    80,
)
# A GPU decodes a token in a few ms; a CPU in tens of ms.
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


class EngineCollector(Collector):
    """Gauges read from each backend when Prometheus scrapes, so they are never stale."""

    def __init__(self, backends: Callable[[], Iterable[Backend]]) -> None:
        self._backends = backends

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "quantserve_num_requests_running", "Requests the engine is computing now.", labels=MODEL_LABELS
        )
        waiting = GaugeMetricFamily(
            "quantserve_num_requests_waiting", "Requests queued for a slot in the engine.", labels=MODEL_LABELS
        )
        kv = GaugeMetricFamily(
            "quantserve_kv_cache_usage_ratio",
            "Share of the KV cache in use, 0 to 1 (only for engines that report it).",
            labels=MODEL_LABELS,
        )
        info = InfoMetricFamily(
            "quantserve_model",
            "The served model and how it runs.",
            labels=(*MODEL_LABELS, "device", "format", "quantization", "kv_cache_dtype", "context_length"),
        )
        for backend in self._backends():
            labels = [backend.spec.id, backend.name]
            stats = backend.stats()
            running.add_metric(labels, stats.running)
            waiting.add_metric(labels, stats.waiting)
            if stats.kv_cache_usage is not None:
                kv.add_metric(labels, stats.kv_cache_usage)
            i = backend.info()
            info.add_metric(
                labels,
                {
                    "device": i.device,
                    "format": i.format,
                    "quantization": i.quantization,
                    "kv_cache_dtype": i.kv_cache_dtype,
                    "context_length": str(i.context_length),
                },
            )
        yield from (running, waiting, kv, info)


class ResidencyCollector(Collector):
    """Model loading and unloading, read from the pool's residency records at scrape time."""

    def __init__(self, residents: Callable[[], Iterable[Resident]]) -> None:
        self._residents = residents

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily("quantserve_models_loaded", "Models loaded now.")
        state = GaugeMetricFamily(
            "quantserve_model_loaded", "1 while the model is loaded, else 0.", labels=(*MODEL_LABELS, "state")
        )
        loads = CounterMetricFamily("quantserve_model_loads", "Completed model loads.", labels=MODEL_LABELS)
        load_s = CounterMetricFamily(
            "quantserve_model_load_seconds", "Time spent loading the model (sum over loads).", labels=MODEL_LABELS
        )
        last_load = GaugeMetricFamily(
            "quantserve_model_last_load_seconds", "How long the model's last load took.", labels=MODEL_LABELS
        )
        evictions = CounterMetricFamily(
            "quantserve_model_evictions",
            "Times the idle model was unloaded to make room for another (max_loaded_models or memory).",
            labels=MODEL_LABELS,
        )
        unloads = CounterMetricFamily(
            "quantserve_model_unloads",
            "Unloads by reason: keep_alive (idle), evicted (room for another), operator.",
            labels=(*MODEL_LABELS, "reason"),
        )
        waits = CounterMetricFamily(
            "quantserve_model_load_waits", "Requests that had to wait for their model to load.", labels=MODEL_LABELS
        )
        waiting = GaugeMetricFamily(
            "quantserve_requests_waiting_for_load", "Requests waiting now for their model to load.", labels=MODEL_LABELS
        )
        count = 0
        for r in self._residents():
            labels = [r.model_id, r.backend.name]
            count += r.state == "loaded"
            state.add_metric([*labels, r.state], 1.0 if r.state == "loaded" else 0.0)
            loads.add_metric(labels, r.loads)
            load_s.add_metric(labels, r.load_seconds)
            if r.last_load_s is not None:
                last_load.add_metric(labels, r.last_load_s)
            evictions.add_metric(labels, r.evictions)
            for reason, n in sorted(r.unloads.items()):
                unloads.add_metric([*labels, reason], n)
            waits.add_metric(labels, r.load_waits)
            waiting.add_metric(labels, r.waiting)
        loaded.add_metric([], count)
        yield from (loaded, state, loads, load_s, last_load, evictions, unloads, waits, waiting)


class Metrics:
    """The app's registry and the per-request instruments ``server.runtime.observe`` records into."""

    def __init__(
        self, backends: Callable[[], Iterable[Backend]], residents: Callable[[], Iterable[Resident]] = tuple
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "quantserve_requests",
            "Generation requests by endpoint and outcome (status: ok, cancelled, invalid_request, overloaded, error).",
            REQUEST_LABELS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "quantserve_prompt_tokens", "Prompt tokens of finished requests.", MODEL_LABELS, registry=r
        )
        self.generation_tokens = Counter(
            "quantserve_generation_tokens", "Tokens sampled (cancelled streams included).", MODEL_LABELS, registry=r
        )
        self.ttft = Histogram(
            "quantserve_time_to_first_token_seconds",
            "From the request reaching the backend to its first chunk.",
            MODEL_LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "quantserve_inter_token_latency_seconds",
            "Time between consecutive sampled tokens of a request.",
            MODEL_LABELS,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "quantserve_e2e_request_latency_seconds",
            "From the request reaching the backend to its last chunk (finished requests).",
            MODEL_LABELS,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "quantserve_request_queue_time_seconds",
            "Time waiting for the engine to start the request (engines that report it).",
            MODEL_LABELS,
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.prefill = Histogram(
            "quantserve_request_prefill_time_seconds",
            "Prompt processing up to the first token, queueing excluded (see the README for how it is measured).",
            MODEL_LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        r.register(EngineCollector(backends))
        r.register(ResidencyCollector(residents))
        # Observed streams in flight per model (server.runtime.observe), to know when one ran alone.
        self.in_flight: dict[str, int] = {}


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics
