"""Prometheus metrics of one server (a private registry, so two apps in a process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "phi3_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.prompt_tokens = Counter("phi3_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generated_tokens = Counter(
            "phi3_generated_tokens", "Tokens decoded (including ones decoded after a disconnect)", ["model"], registry=r
        )
        self.cancelled = Counter(
            "phi3_cancelled_generations", "Generations stopped because the client went away", ["model"], registry=r
        )
        self.abandoned = Counter(
            "phi3_abandoned_requests",
            "Requests whose client went away while they waited in the queue (never decoded)",
            ["model"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "phi3_time_to_first_token_seconds",
            "From slot granted to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_per_token = Histogram(
            "phi3_time_per_output_token_seconds",
            "Mean time per token after the first, per request",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("phi3_queue_depth", "Requests waiting for a generation slot", ["model"], registry=r)
        self.active = Gauge("phi3_active_generations", "Generations running now", ["model"], registry=r)
        self.loaded = Gauge("phi3_loaded_models", "Models loaded now", registry=r)
        self.loads = Counter(
            "phi3_model_loads", "Model loads, by model field and outcome", ["model", "outcome"], registry=r
        )
        self.unloads = Counter("phi3_model_unloads", "Model unloads, by reason", ["model", "reason"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
