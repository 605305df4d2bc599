"""A Prometheus ``/metrics`` endpoint for ragtriage's metrics (the ``prometheus`` extra).

The SDK cannot add a reader to a MeterProvider after it is built, so this
builds its own provider around a ``PrometheusMetricReader`` with a private
registry: two servers in one process never export each other's series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ragtriage.dashboards.metrics import SPECS, MetricSpec

#: OTel unit -> Prometheus unit suffix, as opentelemetry-exporter-prometheus maps them.
_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; pass ``meter_provider`` to :func:`enable_metrics`."""

    meter_provider: Any
    port: int
    addr: str
    _httpd: Any
    _thread: Any

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving and shut the provider down; safe to call twice."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None
            self.meter_provider.shutdown()


def serve_metrics(port: int = 9464, *, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` (9464 is the OTel Prometheus default; 0 picks a free port).

    Loopback by default: the metrics name projects and rules, and say how much is spent. ``addr="0.0.0.0"``
    (``RAGTRIAGE_METRICS_HOST``) lets a Prometheus on another host scrape it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("serve_metrics needs the prometheus extra: pip install 'ragtriage[prometheus]'") from exc
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    registry = CollectorRegistry(auto_describe=True)
    try:
        reader = PrometheusMetricReader(registry=registry)
    except TypeError:  # exporters before the registry argument register globally: move the collector
        from prometheus_client import REGISTRY

        reader = PrometheusMetricReader()
        REGISTRY.unregister(reader._collector)
        registry.register(reader._collector)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "ragtriage"}))
    httpd, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(provider, httpd.server_port, addr, httpd, thread)


def prometheus_name(spec: MetricSpec) -> str:
    """The series name the Prometheus exporter gives ``spec`` (histograms add ``_bucket``/``_sum``/``_count``)."""
    name = spec.name.replace(".", "_")
    unit = spec.unit
    if unit and unit != "1" and not unit.startswith("{"):  # dimensionless and annotation units add nothing
        suffix = _UNIT_SUFFIX.get(unit, unit)
        if not name.endswith(f"_{suffix}"):
            name = f"{name}_{suffix}"
    if spec.kind == "counter":
        name += "_total"
    return name


def prometheus_names() -> dict[str, str]:
    """OTel metric name -> Prometheus series name, for every emitted metric."""
    return {spec.name: prometheus_name(spec) for spec in SPECS}
