"""Freezing a private ftrace instance *in the kernel*: what this kernel honours, and arming it.

Kernel facts, read in the kernel sources (mainline, and the RHEL trees of
bobolopolis/linux-el: 4.18.0-240.el8, 4.18.0-513.9.1.el8_9, 5.14.0-162/362.*.el9):

- An event trigger ``traceoff`` (``events/SYS/EVENT/trigger`` of an instance) stops the
  *top-level* ring, not the instance it is set on, before 5.17 (302e9edd5498):
  ``traceoff_trigger()`` calls ``tracing_off()``. RHEL 8.9 and 9.3 are still so.
- ``printk:console`` fires only for lines printed to a console (the console loglevel,
  RHEL's ``4 4 1 7`` drops KERN_INFO) before 5.19 (701850dc0c31); RHEL 9.3 carries that
  change (``trace_console`` in ``printk_sprint``), RHEL 8 does not.
- A function probe ``FUNC:traceoff`` appended to an instance's ``set_ftrace_filter``
  stops only that instance (``ftrace_traceoff()`` -> ``tracer_tracing_off(tr)``) on
  4.18 already; ``!FUNC:traceoff`` removes it, ``rmdir`` of the instance too
  (``clear_ftrace_function_probes``). It needs the function tracer
  (CONFIG_DYNAMIC_FTRACE), ``kernel.ftrace_enabled`` 1 and FUNC in
  ``available_filter_functions``. A kernel in lockdown refuses it (EPERM).

So the printk:console trigger is armed only on a kernel >= 5.19 *and* after a
self-test line stopped this instance and nothing global; function probes wherever the
kernel takes them. Everything else is stopped from user space (the run's trigger).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from scoutfs_collect.system import tracefs
from scoutfs_collect.system.tracefs import TopLevel, TracefsError, TraceInstance

CONSOLE = "printk:console"
SELFTEST_TAG = "scoutfs-collect-ftrace-selftest"
FTRACE_ENABLED = Path("/proc/sys/kernel/ftrace_enabled")
CONSOLE_EVERY_LEVEL = (5, 19)  # 701850dc0c31: printk:console sees every log line
TRACEOFF_PER_INSTANCE = (5, 17)  # 302e9edd5498: event-trigger traceoff honours the instance
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")  # one function, never a glob

Ring = Union[TraceInstance, TopLevel]


@dataclasses.dataclass
class SelfTest:
    """Did a kernel log line stop this instance, and only this one?"""

    result: str = "skipped"  # passed | failed | skipped
    latency_ms: Optional[float] = None
    others_stopped: List[str] = dataclasses.field(default_factory=list)
    error: str = ""
    traceoff_global: bool = False  # the line stopped the top-level ring (turned back on)
    trigger_removed: bool = False  # failed: our trigger was taken off again


@dataclasses.dataclass
class Freeze:
    """What is armed: ``mode`` (in-kernel: every freeze_on line, by printk:console;
    function-probe: only the functions; user-space), ``why`` one line per mechanism."""

    mode: str = "user-space"
    why: Dict[str, str] = dataclasses.field(default_factory=dict)
    probes: List[str] = dataclasses.field(default_factory=list)
    console: bool = False
    self_test: SelfTest = dataclasses.field(default_factory=SelfTest)


def kernel_release() -> str:
    return os.uname().release


def kernel_version(release: str) -> Tuple[int, int]:
    """(major, minor) of a release string such as ``4.18.0-240.el8.x86_64``."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def console_blocker(release: str) -> str:
    """Why this kernel cannot freeze an instance on printk:console, or ""."""
    version = kernel_version(release)
    if version < TRACEOFF_PER_INSTANCE:
        return f"event-trigger traceoff stops the host's top-level ring before 5.17 (kernel {release})"
    if version < CONSOLE_EVERY_LEVEL:
        return f"printk:console sees only lines above the console loglevel before 5.19 (kernel {release})"
    return ""


def bad_function_names(names: Sequence[str]) -> List[str]:
    return [n for n in names if not FUNCTION_NAME.match(n)]


def function_blocker(root: Path, func: str, available: Optional[set] = None) -> str:
    """Why a ``func:traceoff`` probe cannot be armed here, or "" (reads only)."""
    try:
        enabled = FTRACE_ENABLED.read_text().strip()
    except OSError:
        return f"no {FTRACE_ENABLED}: kernel without the function tracer"
    if enabled != "1":
        return f"kernel.ftrace_enabled is {enabled}: function probes never fire"
    if not (root / "set_ftrace_filter").exists():
        return "no set_ftrace_filter: kernel without CONFIG_DYNAMIC_FTRACE"
    if available is None:
        try:
            available = available_functions(root)
        except OSError as exc:
            return f"cannot read {root / 'available_filter_functions'}: {exc.strerror}"
    if func not in available:
        return f"{func} is not in available_filter_functions (module not loaded?)"
    return ""


def available_functions(root: Path) -> set:
    """Names in ``available_filter_functions`` (``name`` or ``name [module]`` a line)."""
    with open(root / "available_filter_functions", errors="replace") as f:
        return {line.split(None, 1)[0] for line in f if line.strip()}


def _available_or_none(root: Path) -> Optional[set]:
    try:
        return available_functions(root)
    except OSError:  # function_blocker reads it again and says why
        return None


def plan(root: Path, globs: Sequence[str], functions: Sequence[str]) -> Freeze:
    """What :func:`arm` would arm, without writing anything (for ``check``)."""
    out, available = Freeze(), _available_or_none(root) if functions else None
    for func in functions:
        why = function_blocker(root, func, available)
        out.why[f"{func}:traceoff"] = f"not armed: {why}" if why else "armed at start, in the instance"
        out.probes += [] if why else [func]
    out.why[CONSOLE] = _console_plan(root, globs)
    out.console = out.why[CONSOLE].startswith("self-tested")
    out.mode = "in-kernel" if out.console else "function-probe" if out.probes else "user-space"
    out.why["user-space"] = USER_SPACE
    return out


USER_SPACE = "always: the run's trigger stops the instance (lines not frozen in the kernel)"


def _console_plan(root: Path, globs: Sequence[str]) -> str:
    if not globs:
        return "not armed: freeze_on is empty"
    if not tracefs.event_exists(root / "events", CONSOLE):
        return "not armed: no printk:console event"
    why = console_blocker(kernel_release())
    return f"not armed: {why}" if why else "self-tested at start, armed if it passes"


def arm(inst: TraceInstance, globs: Sequence[str], functions: Sequence[str],
        top: Optional[Ring] = None) -> Freeze:
    """Arm what this kernel honours on ``inst``: a traceoff probe per function, the
    printk:console trigger where :func:`console_blocker` and the self-test allow it.
    ``top`` is the top-level ring the self-test watches (a test passes an instance)."""
    out, available = Freeze(), _available_or_none(inst.root) if functions else None
    for func in functions:
        why = function_blocker(inst.root, func, available) or _append_probe(inst, func)
        out.why[f"{func}:traceoff"] = f"not armed: {why}" if why else "armed in set_ftrace_filter"
        out.probes += [] if why else [func]
    out.why[CONSOLE] = _arm_console(inst, globs, top or TopLevel(inst.root), out)
    out.mode = "in-kernel" if out.console else "function-probe" if out.probes else "user-space"
    out.why["user-space"] = USER_SPACE
    return out


# A probe as set_ftrace_filter lists it (kernel/trace/ftrace.c t_probe_show, the probe's
# print, trace_functions.c ftrace_probe_print): "%ps:traceoff:unlimited" (or ":count=N").
# %ps names a module's function with its module: "scoutfs_fence_start [scoutfs]:traceoff:
# unlimited" (read so on 4.18.0-513.9.1.el8_9); a vmlinux one without. The file may also hold
# "#### all functions enabled ####", filter functions ("name [mod]") and "*:mod:NAME" lines.
PROBE_LINE = re.compile(r"^(?P<func>[^\s:\[]+)(?: \[(?P<module>[^\]]+)\])?:(?P<command>[a-z_]+)(?::|$)")


@dataclasses.dataclass
class ListedProbe:
    """One function probe read back from an instance's ``set_ftrace_filter``."""

    function: str
    module: str  # "" for a vmlinux function
    command: str  # traceoff, traceon, snapshot, ...


def listed_probes(text: str) -> List[ListedProbe]:
    """The function probes in a ``set_ftrace_filter`` text (``mod`` lines are not probes)."""
    out = []
    for line in text.splitlines():
        m = PROBE_LINE.match(line.strip())
        if m and m.group("command") != "mod":
            out.append(ListedProbe(m.group("func"), m.group("module") or "", m.group("command")))
    return out


def probe_listed(inst: TraceInstance, func: str, command: str = "traceoff") -> bool:
    """Does the instance's set_ftrace_filter list a ``func:command`` probe?"""
    return any(p.function == func and p.command == command
               for p in listed_probes(inst.read("set_ftrace_filter")))


def _append_probe(inst: TraceInstance, func: str) -> str:
    try:
        inst.write("set_ftrace_filter", f"{func}:traceoff\n", append=True)
        listed = probe_listed(inst, func)
    except (TracefsError, OSError) as exc:
        return str(exc)
    if not listed:
        return "set_ftrace_filter took the probe but does not list it"
    return ""


def disarm_probes(inst: TraceInstance, functions: Sequence[str]) -> List[str]:
    """Remove our probes (``!FUNC:traceoff``) and check they are no longer listed; errors,
    one line each (rmdir of the instance removes them too)."""
    errors = []
    for func in functions:
        try:
            inst.write("set_ftrace_filter", f"!{func}:traceoff\n", append=True)
            if probe_listed(inst, func):
                errors.append(f"{func}:traceoff still listed in set_ftrace_filter after !{func}:traceoff")
        except (TracefsError, OSError) as exc:
            errors.append(str(exc))
    return errors


def _arm_console(inst: TraceInstance, globs: Sequence[str], top: Ring, out: Freeze) -> str:
    if inst.enable_events([CONSOLE]).missing:  # recorded in any case: the lines in the ring
        out.self_test = SelfTest(error="no printk:console event")
        return "not armed: no printk:console event"
    if not globs:
        out.self_test = SelfTest(error="freeze_on is empty")
        return "not armed: freeze_on is empty"
    blocker = console_blocker(kernel_release())
    if blocker:
        out.self_test = SelfTest(error=blocker)
        return f"not armed: {blocker}"
    test = out.self_test = self_test(inst, globs, top)
    out.console = test.result == "passed"
    if out.console:
        return f"armed: a self-test line stopped this instance in {test.latency_ms} ms, nothing else"
    return f"not armed: self-test failed: {test.error}"


def self_test(inst: TraceInstance, globs: Sequence[str], top: Ring, timeout: float = 0.5) -> SelfTest:
    """Arm one traceoff trigger on printk:console for ``globs`` or a fresh nonce glob; log
    a line with the nonce through /dev/kmsg and check that this instance stopped and the
    top-level ring ``top`` did not. If ``top`` went from on to off, our trigger did it
    (this kernel's traceoff is global): it is turned back on. On any failure the trigger
    is removed again (it costs ~120 ms in the kernel); after a pass it stays armed and
    the instance is left stopped."""
    nonce = f"{SELFTEST_TAG}-{uuid.uuid4().hex[:12]}"
    others = [TraceInstance(n, inst.root) for n in tracefs.list_instances(inst.root) if n != inst.name]
    running = [o for o in others if o.path != top.path and _on(o)]
    inst.tracing_on = True
    top_was_on = _on(top)
    patterns = list(globs) + [f"*{nonce}*"]
    try:
        inst.set_trigger(CONSOLE, "traceoff if " + " || ".join(f'msg ~ "{g}"' for g in patterns))
    except TracefsError as exc:
        return SelfTest("failed", error=str(exc))
    test = SelfTest("failed", error="a kernel log line did not fire the printk:console trigger")
    try:
        start = time.monotonic()
        with open("/dev/kmsg", "wb", buffering=0) as kmsg:
            kmsg.write(f"<6>scoutfs-collect: ftrace freeze self-test {nonce} instance {inst.name}\n".encode())
        pause = threading.Event()
        while _on(inst) and (_on(top) or not top_was_on) and time.monotonic() - start < timeout:
            pause.wait(0.002)
        if top_was_on and not _on(top):
            top.tracing_on = True  # undo our own change to the host's ring
            test.traceoff_global = True
            test.error = ("the line stopped the top-level ring (turned back on): "
                          "this kernel's event-trigger traceoff is global")
        elif not _on(inst):
            test.latency_ms = round((time.monotonic() - start) * 1000, 3)
            test.others_stopped = [o.name for o in running if not _on(o)]
            test.result, test.error = "passed", ""
    except OSError as exc:
        test.error = f"/dev/kmsg: {exc.strerror}"
    if test.result != "passed":
        try:
            inst.set_trigger(CONSOLE, "!traceoff")
            test.trigger_removed = True
        except TracefsError as exc:
            test.error += f"; removing the trigger failed: {exc}"
    return test


def _on(ring: Ring) -> bool:
    try:
        return ring.tracing_on
    except OSError:  # removed meanwhile
        return False
