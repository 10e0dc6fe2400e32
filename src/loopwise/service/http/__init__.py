"""The HTTP edge: what every request passes through on its way in and out, and the probes.

    admission       a bound on requests in flight; the excess gets 503 at once
    middleware      request ids, access logs, the request-body size limit
    proxies         the client address behind trusted reverse proxies
    problems        every error as RFC 9457 problem+json, in one handler
    health          GET /healthz and GET /readyz
    metrics         GET /metrics, from a registry the app owns
    metric_sources  the gauges and counters read from the app's parts at scrape time

``service.app`` stacks the middleware and mounts the probes and ``/metrics``.
"""
