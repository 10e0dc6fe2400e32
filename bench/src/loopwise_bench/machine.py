"""The facts a figure means nothing without: cores, memory, kernel, Python, versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import psutil

from loopwise_bench.generators import LoadGenerator

__all__ = ["machine_facts"]

_PACKAGES = (
    "loopwise",
    "fastapi",
    "starlette",
    "pydantic",
    "granian",
    "uvloop",
    "asyncpg",
    "httpx",
)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_facts(
    generator: LoadGenerator, *, postgres: str | None, workers: int
) -> dict[str, object]:
    """Describe this machine and the software under test, for the report's header."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "load_generator": generator.version(),
        "postgres": postgres,
        "server": f"granian, ASGI, uvloop, {workers} worker(s), granian's access log off",
        "load_generator_on_same_machine": True,
    }
