"""The HTTP edge: what every request passes through on its way in and out, and the probes.

    admission       a bound on requests in flight; the excess gets 503 at once
    middleware      request ids, access logs, the request-body size limit
    proxies         the client address behind trusted reverse proxies
    problems        every error as RFC 9457 problem+json, in one handler
    responses       what each route answers besides success: ``responses=declare(...)``
    openapi         the OpenAPI document completed with what the handlers and middleware do
    conditional     ETags from resource versions; If-Match, If-None-Match, 412 and 428
    compression     gzip for large responses to clients that accept it
    health          GET /healthz and GET /readyz
    drain           on SIGTERM, /readyz fails for a while before the server stops
    metrics         GET /metrics, from a registry the app owns
    metric_sources  the gauges and counters read from the app's parts at scrape time

``service.app`` stacks the middleware and mounts the probes and ``/metrics``.
"""
