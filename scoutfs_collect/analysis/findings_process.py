"""The report's analyzers in a process of their own: :func:`.findings.run` in a forked
child while the report's process reads the same archive for its timeline (the analyzers'
pass over every captured frame is the longest part of a report; on two CPUs the report
takes about as long as that pass alone)."""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path
from typing import Any, List, Tuple

from scoutfs_collect.analysis import findings


class FindingsProcess:
    """The child started; :meth:`result` waits for its result, leaving the ``with`` block
    ends it. A result it cannot send back (a site analyzer's finding holding something
    pickle cannot carry) is computed again in this process. ``opened``: as for
    :func:`.findings.run` (a bundle's node archives copied out once for both processes)."""

    def __init__(self, path: Path, types: List[Any], opened: Any = None) -> None:
        self.path, self.types, self.opened = path, types, opened
        context = multiprocessing.get_context("fork")
        self._conn, theirs = context.Pipe(duplex=False)
        self._child = context.Process(target=_run_child, name="scoutfs-collect-findings",
                                      args=(theirs, path, types, opened))
        self._child.start()
        theirs.close()

    def __enter__(self) -> FindingsProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._conn.close()
        if self._child.is_alive():  # this process failed first: SIGTERM, which the child
            self._child.terminate()  # turns into SystemExit, so it removes its temporary files
            self._child.join(10)
            if self._child.is_alive():
                self._child.kill()
        self._child.join()

    def result(self) -> findings.Result:
        """The child's result; its ValueError (bad input) raised here as a ValueError."""
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._child.join()
            raise RuntimeError(f"{self.path}: the findings process died "
                               f"(exit status {self._child.exitcode})") from None
        if status == "ok":
            return payload
        if status == "unsendable":
            return findings.run(self.path, self.types, self.opened)
        raise ValueError(payload) if status == "ValueError" else RuntimeError(payload)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run_child(conn: Any, path: Path, types: List[Any], opened: Any) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # FindingsProcess.__exit__: unwind, clean up
    try:
        try:
            message: Tuple[str, Any] = ("ok", findings.run(path, types, opened))
        except KeyboardInterrupt:  # Ctrl-C reached the whole process group: the parent ends too
            return
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            message = (type(exc).__name__, str(exc) or type(exc).__name__)
        try:
            conn.send(message)
        except OSError:  # the parent is gone
            pass
        except Exception:  # noqa: BLE001 - pickling failed before anything was sent
            conn.send(("unsendable", ""))
    except OSError:
        pass
    finally:
        conn.close()
