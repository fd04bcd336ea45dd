"""Prometheus metrics of one server: requests, latency, encoder batches, errors, reloads."""
from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        disable_created_metrics()  # *_created series: noise for a single process
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mimicsearch_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("mimicsearch_request_seconds", "Time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("mimicsearch_errors", "Requests answered with an error",
                              ["route", "status"], registry=r)
        self.batch_texts = Histogram("mimicsearch_encoder_batch_texts",
                                     "Texts per encoder call", buckets=BATCH_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram("mimicsearch_encoder_batch_requests",
                                        "Requests sharing one encoder call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.reloads = Counter("mimicsearch_index_reloads",
                               "Index reloads after another process changed it", registry=r)
        self.notes = Gauge("mimicsearch_index_notes", "Live notes in the served index",
                           registry=r)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)

    def render(self) -> bytes:
        return generate_latest(self.registry)
