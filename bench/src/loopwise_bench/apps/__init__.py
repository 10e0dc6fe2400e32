"""The apps the service is measured against, each served by granian exactly like loopwise.

- :mod:`.bare`: a bare ASGI app (the server's own ceiling), also the fan-out's slow target.
- :mod:`.hello`: a bare FastAPI hello-world (the framework's ceiling).
- :mod:`.floor`: bare FastAPI + a pooled asyncpg single-row read (the floor of our read path).
- :mod:`.naive`: the blog post's patterns, as written there, on the same schema.

Each module exposes ``create_app()``, a factory reading its settings from the environment
(``LOOPWISE_BENCH_*``), because granian builds the app in each worker process.
"""

__all__: list[str] = []
