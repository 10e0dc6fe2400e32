"""What ships: the wheel holds the service and the toolkit; the command lists what operators run."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import typer
from typer.testing import CliRunner

from loopwise.cli import app

_ROOT = Path(__file__).resolve().parent.parent


def _wheel_names(out_dir: Path) -> list[str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "the wheel is built with uv, which ./scripts/test installs"
    subprocess.run(  # noqa: S603 -- uv, found above, building this project
        [uv, "build", "--wheel", "--quiet", "--out-dir", str(out_dir), str(_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out_dir.glob("loopwise-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_ships_no_benchmark_or_simulator(tmp_path: Path) -> None:
    """The built wheel holds loopwise's service and toolkit, and no lab code."""
    names = _wheel_names(tmp_path)
    packages = {name.split("/")[0] for name in names}
    assert packages == {"loopwise", "loopwise-0.1.0.dist-info"}
    assert "loopwise/service/app.py" in names
    assert "loopwise/patterns/__init__.py" in names
    lab = [n for n in names if "bench" in n or "/sim/" in n or n.endswith((".lua", ".png"))]
    assert lab == []


def test_help_lists_only_what_an_operator_runs() -> None:
    """`loopwise --help` lists the service's commands and nothing from the benchmark lab."""
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    assert list(command.commands) == ["serve", "migrate", "worker", "jobs", "users"]
    assert "bench" not in result.output
    assert "downstream-sim" not in result.output
