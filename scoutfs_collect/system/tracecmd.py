"""trace-cmd run on files: building a trace.dat from raw per-CPU ring pages
(``trace-cmd restore``) and reading one back as text (``trace-cmd report``).

Neither command writes anything in tracefs (checked with strace: ``report`` opens only
its file; ``restore`` opens the top-level ``events/header_page`` and, with ``-i``,
``trace_clock``, both read only). Building the headers from the running kernel
(``restore -c``) also reads /proc/kallsyms, which briefly sets kernel.kptr_restrict to 0;
from a saved headers directory it does neither (see :func:`restore_trace_dat`).
``restore -i`` stores the top-level trace clock's name in the file, not the recording
instance's: for the usual local, global, boot and mono clocks ``report`` prints the same
nanosecond stamps whatever the name (a host whose top-level clock is a counter clock
such as x86-tsc is not covered: changing it would touch global tracing state).
The program is found with :func:`scoutfs_collect.system.tracefs.trace_cmd`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import IO, List, Optional, Sequence

from scoutfs_collect.system import proc, tracefs

NO_KALLSYMS = "no-kallsyms"  # a name restore -k is given and that never exists


def restore_trace_dat(cpu_files: Sequence[Path], out: Path, partial: Path,
                      headers: Optional[Path] = None, timeout: float = 600) -> str:
    """Build ``out`` (a trace.dat) from raw per-CPU ring pages (what
    :meth:`~scoutfs_collect.system.tracefs.TraceInstance.dump_raw` wrote): first
    ``partial``, the headers file (unless it exists already), then ``restore -i partial
    -o out CPU-FILES``. Returns "" on success, else why it failed (one line).

    ``headers`` None: the headers come from the running kernel (``restore -c``).
    ``headers``: a directory written by ``TraceInstance.save_headers`` (another machine's,
    read from an archive): ``-t`` reads the event formats there, and ``-k`` names a file
    that does not exist, so trace-cmd neither reads /proc/kallsyms nor writes the
    kptr_restrict sysctl (function addresses then print as hex).
    """
    tc = tracefs.trace_cmd()
    if tc is None:
        return "trace-cmd not installed"
    create: List[object] = [tc, "restore", "-c", "-o", partial]
    if headers is not None:
        create[3:3] = ["-t", headers, "-k", Path(partial).parent / NO_KALLSYMS]
    steps = [] if Path(partial).exists() else [create]
    for argv in steps + [[tc, "restore", "-i", partial, "-o", out, *cpu_files]]:
        try:
            res = proc.run(argv, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"trace-cmd restore: {exc}"
        if res.returncode != 0:
            return f"trace-cmd restore: {res.stderr.strip()[-300:]}"
    return ""


class Report:
    """``trace-cmd report DAT`` read while it runs: :attr:`lines` is its standard output
    (one event a line, in time order). Leaving the ``with`` block reads it to the end
    (or, on an exception, kills the program), reaps it and sets :attr:`returncode` and :attr:`error`
    (its last stderr lines). Raises FileNotFoundError when trace-cmd is not installed."""

    def __init__(self, dat: Path) -> None:
        tc = tracefs.trace_cmd()
        if tc is None:
            raise FileNotFoundError("trace-cmd not installed")
        self.returncode: Optional[int] = None
        self.error = ""
        self._stderr = tempfile.TemporaryFile()
        try:
            # A short-lived pipe read by the caller, not a long-lived child: proc.py owns those.
            self._popen = subprocess.Popen([tc, "report", str(dat)], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=self._stderr,
                                           start_new_session=True)
        except BaseException:
            self._stderr.close()
            raise
        assert self._popen.stdout is not None
        self.lines: IO[bytes] = self._popen.stdout

    def __enter__(self) -> Report:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            while self.lines.read(1 << 16):  # to the end, so that it exits by itself
                pass
        elif self._popen.poll() is None:
            self._popen.kill()
        self.lines.close()
        self.returncode = self._popen.wait()
        self._stderr.seek(0)
        tail = self._stderr.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        self._stderr.close()
        self.error = " | ".join(line.strip() for line in tail[-3:])
