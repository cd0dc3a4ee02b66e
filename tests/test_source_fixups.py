"""tools/targets/source-fixups.py as the target-kernel builder runs it: on a kernel tree, one
line per edit, each edit applied only where the tree still has the problem it fixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "targets" / "source-fixups.py"

# The lines of EL8's trees the gcc 10 stack-protector edits anchor on (4.18.0-240.el8).
EL8_COMPILER_H = "#ifdef __KERNEL__\n#endif /* __KERNEL__ */\n\n#endif /* __LINUX_COMPILER_H */\n"
EL8_SMPBOOT = (
    "static void notrace start_secondary(void *unused)\n{\n\tboot_init_stack_canary();\n"
    "\twmb();\n\tcpu_startup_entry(CPUHP_AP_ONLINE_IDLE);\n}\n"
)
# EL9 (5.14.0-362.8.1.el9_3) has the macro already and sets a secondary CPU's canary on the
# boot CPU, so its start_secondary tail call is harmless.
EL9_COMPILER_H = (
    "#ifdef __KERNEL__\n#endif /* __KERNEL__ */\n\n"
    "#define prevent_tail_call_optimization()\tmb()\n\n#endif /* __LINUX_COMPILER_H */\n"
)
EL9_SMPBOOT = (
    "static void notrace start_secondary(void *unused)\n{\n"
    "\twmb();\n\tcpu_startup_entry(CPUHP_AP_ONLINE_IDLE);\n}\n"
)


def make_tree(root: Path, files: dict) -> Path:
    (root / "Makefile").write_text("VERSION = 4\n")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(tree: Path) -> dict:
    """Run the script; return {path: what it said} for the files it reported."""
    done = subprocess.run([sys.executable, str(SCRIPT), str(tree)], capture_output=True, text=True,
                          check=True)
    said = {}
    for line in done.stdout.splitlines():
        path, outcome = line.split(": ", 2)[:2]
        said.setdefault(path, outcome)
    return said


def test_el8_tree_gets_the_edits_once(tmp_path):
    tree = make_tree(tmp_path, {"include/linux/compiler.h": EL8_COMPILER_H,
                                "arch/x86/kernel/smpboot.c": EL8_SMPBOOT})
    first = run(tree)
    assert first["include/linux/compiler.h"] == "applied"
    assert first["arch/x86/kernel/smpboot.c"] == "applied"
    compiler_h = (tree / "include/linux/compiler.h").read_text()
    smpboot = (tree / "arch/x86/kernel/smpboot.c").read_text()
    assert compiler_h.count("#define prevent_tail_call_optimization()") == 1
    assert "cpu_startup_entry(CPUHP_AP_ONLINE_IDLE);\n\tprevent_tail_call_optimization();\n}" in smpboot

    second = run(tree)
    assert second["include/linux/compiler.h"] == "already there"
    assert second["arch/x86/kernel/smpboot.c"] == "already there"
    assert (tree / "include/linux/compiler.h").read_text() == compiler_h
    assert (tree / "arch/x86/kernel/smpboot.c").read_text() == smpboot


def test_el9_tree_that_has_the_fix_is_left_as_it_is(tmp_path):
    tree = make_tree(tmp_path, {"include/linux/compiler.h": EL9_COMPILER_H,
                                "arch/x86/kernel/smpboot.c": EL9_SMPBOOT})
    said = run(tree)
    assert said["include/linux/compiler.h"].startswith("not applicable")
    assert said["arch/x86/kernel/smpboot.c"].startswith("not applicable")
    assert (tree / "include/linux/compiler.h").read_text() == EL9_COMPILER_H
    assert (tree / "arch/x86/kernel/smpboot.c").read_text() == EL9_SMPBOOT


def test_a_directory_that_is_no_kernel_tree_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "KERNEL_SOURCE_DIR" in done.stderr
