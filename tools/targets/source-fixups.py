#!/usr/bin/env python3
"""Make a pristine RHEL kernel tree (EL8 4.18, EL9 5.14) build and boot with gcc 12 and
binutils >= 2.36, with a small guest config, under virtme-ng. Each edit mirrors an upstream
change (or says why there is none) and is applied only where the tree still has the old code,
so one script serves every tag:

    source-fixups.py KERNEL_SOURCE_DIR

Prints one line per edit: applied, already there, or not applicable (no file, the tag has the
fix in its own form, the tag lacks what the edit is for, or other code).
Exit 2 when the directory is not a kernel tree. Two more fixes live in build-kernel.sh, not
here: `make DISABLE_WERROR=1` (RHEL's own switch for gcc 12's new array-bounds warnings) and
`scripts/config --disable CALGARY_IOMMU` (pci-calgary_64.c lacks `mapping_error`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edit:
    """One textual replacement in one file, and the upstream change it mirrors.

    unless: text whose presence in the file means the tag already has the fix (in its own
    form); needs: text without which the file does not have the problem the edit is for.
    """

    path: str
    old: str
    new: str
    upstream: str
    unless: str = ""
    needs: str = ""


EDITS = [
    # gcc 12: -Werror=use-after-free in tools/lib/subcmd (objtool's build). Upstream
    # 52a9dab6d892 "libsubcmd: Fix use-after-free for realloc(..., 0)" rewrote xrealloc
    # to this form.
    Edit(
        "tools/lib/subcmd/subcmd-util.h",
        "\tvoid *ret = realloc(ptr, size);\n"
        "\tif (!ret && !size)\n"
        "\t\tret = realloc(ptr, 1);\n"
        "\tif (!ret) {\n"
        "\t\tret = realloc(ptr, size);\n"
        "\t\tif (!ret && !size)\n"
        "\t\t\tret = realloc(ptr, 1);\n"
        "\t\tif (!ret)\n"
        "\t\t\tdie(\"Out of memory, realloc failed\");\n"
        "\t}\n"
        "\treturn ret;\n",
        "\tvoid *ret = realloc(ptr, size);\n"
        "\tif (!ret)\n"
        "\t\tdie(\"Out of memory, realloc failed\");\n"
        "\treturn ret;\n",
        "52a9dab6d892 libsubcmd: Fix use-after-free for realloc(..., 0)",
    ),
    # binutils >= 2.36 leaves no .symtab in the empty thunk_64.o: "objtool: missing symbol
    # table". Upstream 1d489151e9f9 "objtool: Don't fail on missing symbol table".
    Edit(
        "tools/objtool/elf.c",
        "\tsymtab = find_section_by_name(elf, \".symtab\");\n"
        "\tif (!symtab) {\n"
        "\t\tWARN(\"missing symbol table\");\n"
        "\t\treturn -1;\n"
        "\t}\n"
        "\n"
        "\tsymbols_nr = symtab->sh.sh_size / symtab->sh.sh_entsize;\n",
        "\tsymtab = find_section_by_name(elf, \".symtab\");\n"
        "\t/* An empty object (thunk_64.o) may have no symbol table at all. */\n"
        "\tsymbols_nr = symtab ? symtab->sh.sh_size / symtab->sh.sh_entsize : 0;\n",
        "1d489151e9f9 objtool: Don't fail on missing symbol table",
        unless="A missing symbol table is actually possible",
    ),
    # RHEL does not ship 9p, so its page_mkwrite was never converted to vm_fault_t and no
    # longer matches vm_operations_struct. Upstream converted every ->page_mkwrite to
    # vm_fault_t in 2018, after 1c8f422059ae "mm: change return type to vm_fault_t"
    # introduced the type; the commit that converted 9p's was not found to quote.
    Edit(
        "fs/9p/vfs_file.c",
        "static int\nv9fs_vm_page_mkwrite(struct vm_fault *vmf)",
        "static vm_fault_t\nv9fs_vm_page_mkwrite(struct vm_fault *vmf)",
        "upstream's vm_fault_t conversion (after 1c8f422059ae mm: change return type to vm_fault_t)",
    ),
    # RHEL 9 does not ship 9p either: its VFS has the 5.18/5.19 folio address_space
    # operations, its fs/9p still the page ones (no member releasepage, invalidatepage,
    # launder_page, set_page_dirty). The four edits below are upstream's conversions of 9p;
    # their old text (page_folio() in page operations) exists only in EL9's fs/9p.
    # a26d3411bbdd "9p: Convert to release_folio"
    Edit(
        "fs/9p/vfs_addr.c",
        "static int v9fs_release_page(struct page *page, gfp_t gfp)\n"
        "{\n"
        "\tstruct folio *folio = page_folio(page);\n"
        "\tstruct inode *inode = folio_inode(folio);\n"
        "\n"
        "\tif (folio_test_private(folio))\n"
        "\t\treturn 0;\n"
        "#ifdef CONFIG_9P_FSCACHE\n"
        "\tif (folio_test_fscache(folio)) {\n"
        "\t\tif (current_is_kswapd() || !(gfp & __GFP_FS))\n"
        "\t\t\treturn 0;\n"
        "\t\tfolio_wait_fscache(folio);\n"
        "\t}\n"
        "#endif\n"
        "\tfscache_note_page_release(v9fs_inode_cookie(V9FS_I(inode)));\n"
        "\treturn 1;\n"
        "}\n",
        "static bool v9fs_release_folio(struct folio *folio, gfp_t gfp)\n"
        "{\n"
        "\tstruct inode *inode = folio_inode(folio);\n"
        "\n"
        "\tif (folio_test_private(folio))\n"
        "\t\treturn false;\n"
        "#ifdef CONFIG_9P_FSCACHE\n"
        "\tif (folio_test_fscache(folio)) {\n"
        "\t\tif (current_is_kswapd() || !(gfp & __GFP_FS))\n"
        "\t\t\treturn false;\n"
        "\t\tfolio_wait_fscache(folio);\n"
        "\t}\n"
        "#endif\n"
        "\tfscache_note_page_release(v9fs_inode_cookie(V9FS_I(inode)));\n"
        "\treturn true;\n"
        "}\n",
        "a26d3411bbdd 9p: Convert to release_folio",
    ),
    # 040cdd4bf90e "9p: Convert to invalidate_folio"
    Edit(
        "fs/9p/vfs_addr.c",
        "static void v9fs_invalidate_page(struct page *page, unsigned int offset,\n"
        "\t\t\t\t unsigned int length)\n"
        "{\n"
        "\tstruct folio *folio = page_folio(page);\n"
        "\n"
        "\tfolio_wait_fscache(folio);\n"
        "}\n",
        "static void v9fs_invalidate_folio(struct folio *folio, size_t offset,\n"
        "\t\t\t\t size_t length)\n"
        "{\n"
        "\tfolio_wait_fscache(folio);\n"
        "}\n",
        "040cdd4bf90e 9p: Convert to invalidate_folio",
    ),
    # 76dba927201d "9p: Convert from launder_page to launder_folio"
    Edit(
        "fs/9p/vfs_addr.c",
        "static int v9fs_launder_page(struct page *page)\n"
        "{\n"
        "\tstruct folio *folio = page_folio(page);\n"
        "\tint retval;\n",
        "static int v9fs_launder_folio(struct folio *folio)\n"
        "{\n"
        "\tint retval;\n",
        "76dba927201d 9p: Convert from launder_page to launder_folio",
    ),
    # 8fb72b4a7693 "fscache: Convert fscache_set_page_dirty() to fscache_dirty_folio()"
    # (9p's part; without FSCACHE, upstream's filemap_dirty_folio), and the operations
    # table the four conversions change.
    Edit(
        "fs/9p/vfs_addr.c",
        "static int v9fs_set_page_dirty(struct page *page)\n"
        "{\n"
        "\tstruct v9fs_inode *v9inode = V9FS_I(page->mapping->host);\n"
        "\n"
        "\treturn fscache_set_page_dirty(page, v9fs_inode_cookie(v9inode));\n"
        "}\n"
        "#else\n"
        "#define v9fs_set_page_dirty __set_page_dirty_nobuffers\n"
        "#endif\n"
        "\n"
        "const struct address_space_operations v9fs_addr_operations = {\n"
        "\t.read_folio = netfs_read_folio,\n"
        "\t.readahead = netfs_readahead,\n"
        "\t.set_page_dirty = v9fs_set_page_dirty,\n"
        "\t.writepage = v9fs_vfs_writepage,\n"
        "\t.write_begin = v9fs_write_begin,\n"
        "\t.write_end = v9fs_write_end,\n"
        "\t.releasepage = v9fs_release_page,\n"
        "\t.invalidatepage = v9fs_invalidate_page,\n"
        "\t.launder_page = v9fs_launder_page,\n",
        "static bool v9fs_dirty_folio(struct address_space *mapping, struct folio *folio)\n"
        "{\n"
        "\tstruct v9fs_inode *v9inode = V9FS_I(mapping->host);\n"
        "\n"
        "\treturn fscache_dirty_folio(mapping, folio, v9fs_inode_cookie(v9inode));\n"
        "}\n"
        "#else\n"
        "#define v9fs_dirty_folio filemap_dirty_folio\n"
        "#endif\n"
        "\n"
        "const struct address_space_operations v9fs_addr_operations = {\n"
        "\t.read_folio = netfs_read_folio,\n"
        "\t.readahead = netfs_readahead,\n"
        "\t.dirty_folio = v9fs_dirty_folio,\n"
        "\t.writepage = v9fs_vfs_writepage,\n"
        "\t.write_begin = v9fs_write_begin,\n"
        "\t.write_end = v9fs_write_end,\n"
        "\t.release_folio = v9fs_release_folio,\n"
        "\t.invalidate_folio = v9fs_invalidate_folio,\n"
        "\t.launder_folio = v9fs_launder_folio,\n",
        "8fb72b4a7693 fscache: Convert fscache_set_page_dirty() to fscache_dirty_folio() (9p)",
    ),
    # gcc >= 10 defaults to -fno-common: "multiple definition of __force_order" when both
    # kaslr_64.c and pgtable_64.c define it. Upstream df6d4f9db79c "x86/boot/compressed:
    # Don't declare __force_order in kaslr_64.c" dropped this one.
    Edit(
        "arch/x86/boot/compressed/kaslr_64.c",
        "/* Used by pgtable.h asm code to force instruction serialization. */\n"
        "unsigned long __force_order;\n",
        "/* __force_order is defined in pgtable_64.c only (df6d4f9db79c) */\n",
        "df6d4f9db79c x86/boot/compressed: Don't declare __force_order in kaslr_64.c",
    ),
    # gcc >= 10 tail-calls cpu_startup_entry()/rest_init() from functions whose canary
    # changed: "stack-protector: Kernel stack is corrupted in: start_secondary" on any
    # boot with > 1 CPU. Upstream a9a3ed1eff36 "x86: Fix early boot crash on gcc-10,
    # third try": a barrier after the call so it is not a tail call. EL9 has the macro and
    # the start_kernel barrier already, and sets a secondary CPU's canary on the boot CPU
    # (cpu_init_stack_canary in do_boot_cpu), so its start_secondary needs none.
    Edit(
        "include/linux/compiler.h",
        "#endif /* __KERNEL__ */\n",
        "#endif /* __KERNEL__ */\n\n"
        "/* a9a3ed1eff36: stop gcc >= 10 tail-calling a function after a canary change */\n"
        "#define prevent_tail_call_optimization()\tmb()\n",
        "a9a3ed1eff36 x86: Fix early boot crash on gcc-10, third try (compiler.h)",
        unless="#define prevent_tail_call_optimization()",
    ),
    Edit(
        "arch/x86/kernel/smpboot.c",
        "\twmb();\n\tcpu_startup_entry(CPUHP_AP_ONLINE_IDLE);\n}\n",
        "\twmb();\n\tcpu_startup_entry(CPUHP_AP_ONLINE_IDLE);\n"
        "\tprevent_tail_call_optimization();\n}\n",
        "a9a3ed1eff36 x86: Fix early boot crash on gcc-10, third try (start_secondary)",
        needs="\tboot_init_stack_canary();\n",
    ),
    # Not a compiler fix and no upstream change: RHEL 8's kABI guard on the pv_*_ops sizes
    # holds only with RHEL's full config (PARAVIRT_XXL via Xen PV); a guest kernel built from
    # a small config has no kABI to keep, so the guard goes.
    Edit(
        "kernel/locking/qspinlock.c",
        "\tBUILD_BUG_ON((sizeof(struct pv_init_ops) != 8)   ||\n"
        "\t\t     (sizeof(struct pv_time_ops) != 16)  ||\n"
        "\t\t     (sizeof(struct pv_cpu_ops)  != 272) ||\n"
        "\t\t     (sizeof(struct pv_irq_ops)  != 64)  ||\n"
        "\t\t     (sizeof(struct pv_mmu_ops)  != 384) ||\n"
        "\t\t     (sizeof(struct pv_lock_ops) != 48));\n",
        "\t/* guest build: RHEL's kABI size guard dropped (see source-fixups.py) */\n",
        "none: RHEL kABI size guard, kept only with RHEL's own config",
    ),
    Edit(
        "init/main.c",
        "\t/* Do the rest non-__init'ed, we're now alive */\n\trest_init();\n}\n",
        "\t/* Do the rest non-__init'ed, we're now alive */\n\trest_init();\n"
        "\tprevent_tail_call_optimization();\n}\n",
        "a9a3ed1eff36 x86: Fix early boot crash on gcc-10, third try (start_kernel)",
        unless="rest_init();\n\n\tprevent_tail_call_optimization();\n}\n",
    ),
]


def apply(tree: Path, edit: Edit) -> str:
    """Apply one edit in place; return what happened, in a few words."""
    path = tree / edit.path
    if not path.is_file():
        return "not applicable (no file)"
    text = path.read_text()
    if edit.new and edit.new in text:  # first: some replacements contain their old text
        return "already there"
    if edit.unless and edit.unless in text:
        return "not applicable (the tag has the fix in its own form)"
    if edit.needs and edit.needs not in text:
        return "not applicable (the tag lacks what the edit is for)"
    if edit.old in text:
        path.write_text(text.replace(edit.old, edit.new, 1))
        return "applied"
    return "not applicable (code differs: the tag has the fix or other code)"


def main(argv: list) -> int:
    if len(argv) != 2 or not (Path(argv[1]) / "Makefile").is_file():
        print("usage: source-fixups.py KERNEL_SOURCE_DIR (a kernel tree with a Makefile)",
              file=sys.stderr)
        return 2
    tree = Path(argv[1])
    for edit in EDITS:
        print(f"{edit.path}: {apply(tree, edit)}: {edit.upstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
