"""Running the real ``scoutfs-collect`` CLI in tests and benchmarks, each run with its own
lock (SCOUTFS_COLLECT_RUNTIME) and config (SCOUTFS_COLLECT_ETC) directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from tests.support.helpers import wait_for

HERE = Path(__file__).resolve().parents[1]  # tests/

def cli_env(run_dir: Path) -> Dict[str, str]:
    """This environment with a private lock (runtime) and config (etc) dir below ``run_dir``."""
    env = dict(os.environ)
    env["SCOUTFS_COLLECT_RUNTIME"] = str(run_dir / "run")
    env["SCOUTFS_COLLECT_ETC"] = str(run_dir / "etc")
    return env


def cli_argv(*args: object) -> List[str]:
    """The installed ``scoutfs-collect`` as this interpreter runs it. Run it with a working
    directory outside the checkout: ``-m`` puts the cwd first on sys.path, and from the
    checkout it would run the source tree instead of the install under test."""
    return [sys.executable, "-m", "scoutfs_collect", *[str(a) for a in args]]


def read_events(path: Path) -> List[Dict]:
    """The complete JSON lines of an events file so far (a line being written is skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip().endswith("}")]


class Cli:
    """Runs ``python -m scoutfs_collect`` with this test's own lock and config dirs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "out"
        self.out.mkdir(mode=0o755)
        self.events = tmp / "events.jsonl"
        self.env = cli_env(tmp)
        self.procs: List[subprocess.Popen] = []

    def argv(self, *args: str) -> List[str]:
        return cli_argv(*args)

    def capture_args(self, profile: Path, *extra: str, port: int = 7001) -> List[str]:
        """The arguments of a capture run as most tests make one: the test kit's plugins,
        ``profile``, this test's output dir and events file, ``extra``, then
        127.0.0.1 ``port``."""
        return ["--plugin-dir", str(self.plugin_dir()), "--profile", str(profile),
                "--output-dir", str(self.out), "--events-file", str(self.events),
                *extra, "127.0.0.1", str(port)]

    def start_capture(self, profile: Path, *extra: str, port: int = 7001) -> subprocess.Popen:
        """:meth:`start` with :meth:`capture_args`."""
        return self.start(*self.capture_args(profile, *extra, port=port))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, cwd=self.tmp, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """Start a run in the background; stop it with .finish()."""
        p = subprocess.Popen(self.argv(*args), env=self.env, cwd=self.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def event_list(self) -> List[Dict]:
        return read_events(self.events)

    def wait_event(self, name: str, proc: Optional[subprocess.Popen] = None,
                   timeout: float = 60, nth: int = 1) -> Dict:
        """The nth event called ``name`` in the events file (runs may share the file)."""
        def found():
            matching = [e for e in self.event_list() if e["event"] == name]
            if len(matching) >= nth:
                return matching[nth - 1]
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"run exited {proc.returncode} before '{name}': "
                                     f"{proc.stderr.read() if proc.stderr else ''}")
            return None
        return wait_for(found, timeout, f"event {name}")

    def plugin_dir(self) -> Path:
        """A copy of tests/site_plugins that passes the ownership/permission checks."""
        d = self.tmp / "site_plugins"
        if not d.exists():
            shutil.copytree(HERE / "site_plugins", d)
            os.chmod(d, 0o755)
            for f in d.iterdir():
                os.chmod(f, 0o644)
        return d

    def profile(self, text: str, name: str = "p.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)


def finish(proc: subprocess.Popen, timeout: float = 120):
    """Wait for a background run; its (returncode, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
