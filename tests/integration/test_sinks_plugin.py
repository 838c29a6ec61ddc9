"""A third-party sink found through its entry point: really installed, used in a fresh process.

The example package (tests/plugins/logbus-example-sink) is built and installed
with pip into a temporary directory, never into the environment running the
tests; subprocesses see it through PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parents[1] / "plugins" / "logbus-example-sink"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example plugin (distribution metadata included)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(PLUGIN, source)  # pip builds in place: keep the repository clean
    target = work / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return target


def run_python(code: str, plugin_path: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` with the plugin importable (or not)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if plugin_path is not None:
        env["PYTHONPATH"] = str(plugin_path)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


USE_IT = """
from logbus.record import LogRecord
from logbus.sinks import known_sinks, load_sink
sink = load_sink("example:out.txt?prefix=seen")
sink.open()
print(sink.write([LogRecord.from_key("kern.critical", "disk failed")]))
sink.close()
print(type(sink).__module__, "example" in known_sinks())
"""


def test_the_installed_plugin_is_loaded_by_its_entry_point_name(plugin_path, tmp_path):
    """'example:PATH?prefix=seen' resolves to the plugin's class, which writes its line."""
    done = run_python(USE_IT, plugin_path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[None]", "logbus_example_sink True"]
    assert (tmp_path / "out.txt").read_text() == "seen kern.critical disk failed\n"


def test_the_plugins_options_are_checked_like_a_builtins(plugin_path, tmp_path):
    """An unknown option of the plugin lists the plugin's own options."""
    code = (
        "from logbus.sinks import load_sink\n"
        "try:\n    load_sink('example:out.txt?prefx=x')\n"
        "except Exception as exc:\n    print(exc)\n"
    )
    done = run_python(code, plugin_path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sink example has no option 'prefx' (did you mean 'prefix'?)" in done.stdout


def test_without_the_plugin_installed_the_name_is_unknown(tmp_path):
    """The same process without the plugin on its path does not know 'example'."""
    code = (
        "from logbus.sinks import load_sink\n"
        "try:\n    load_sink('example:out.txt')\n"
        "except Exception as exc:\n    print(exc)\n"
    )
    done = run_python(code, None, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "unknown sink 'example'" in done.stdout


def test_the_worker_command_accepts_the_plugin_sink(plugin_path, tmp_path):
    """`logbus worker --sink example:...` gets past loading the sink (a bad broker stops it)."""
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    done = subprocess.run(
        [sys.executable, "-m", "logbus", "worker", "--sink", "example:out.txt?prefx=x",
         "--url", "amqp://guest:guest@127.0.0.1:1/%2F"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert "sink example has no option 'prefx'" in done.stderr
