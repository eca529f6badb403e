"""Seeing the policies at work: snapshots, a health score, Prometheus and OpenTelemetry.

- :func:`resilient.snapshot` (``resilient.observe.snapshot``): every live
  policy's state and figures, and a health score in [0, 1]. No dependency.
- ``resilient.observe.prometheus.PrometheusObserver``: extra ``prometheus``.
- ``resilient.observe.otel.OpenTelemetryObserver``: extra ``otel``.

This package imports neither integration: ``import resilient`` never needs
prometheus-client or OpenTelemetry. Each integration module imports its
library when it is itself imported, and says which extra to install if the
library is missing.
"""
