"""How two processes share the reading of an archive (scan.plan_split): every block of
a text trace and every pcap file is read by exactly one of them, and the pcap files go
to whichever has less to do."""

from __future__ import annotations

from scoutfs_collect.analysis import scan

MiB = 1 << 20


def _manifest(trace: int, pcaps: int, pcap_size: int = 50 * MiB) -> dict:
    files = [{"path": f"tcpdump.pcap{i:02d}", "size": pcap_size} for i in range(pcaps)]
    return {"plugins": {
        "ftrace": {"type": "ftrace", "files": [{"path": "trace.txt", "size": trace},
                                              {"path": "trace.dat", "size": 10 * trace}]},
        "tcpdump": {"type": "tcpdump", "files": files + [{"path": "tcpdump.stderr", "size": 10}]},
    }}


def _owners(parent: scan.Split, child: scan.Split, pcaps: int) -> dict:
    owners = {}
    for i in range(pcaps):
        f = f"tcpdump.pcap{i:02d}"
        readers = [who for who, part in (("parent", parent), ("child", child)) if part.reads("tcpdump", f)]
        assert len(readers) == 1, (f, readers)
        owners[f] = readers[0]
    return owners


def test_every_block_and_file_is_read_once():
    parent, child = scan.plan_split(_manifest(28 * MiB, 22), {"ftrace", "tcpdump"})
    for block in range(30):
        assert (block in parent.blocks) != (block in child.blocks)
    owners = _owners(parent, child, 22)
    # 1.1 GB of pcap outweighs the trace: both processes get a good share of the files
    assert 8 <= list(owners.values()).count("child") <= 14
    # a file the manifest does not list is the parent's
    assert parent.reads("tcpdump", "tcpdump.pcap99") and not child.reads("tcpdump", "tcpdump.pcap99")


def test_a_small_pcap_ring_stays_with_the_parent_when_the_child_has_the_trace():
    parent, child = scan.plan_split(_manifest(28 * MiB, 3, 20 * MiB), {"ftrace", "tcpdump"})
    assert set(_owners(parent, child, 3).values()) == {"parent"}


def test_pcap_files_alone_are_dealt_out():
    parent, child = scan.plan_split(_manifest(0, 4), {"tcpdump"})
    assert list(_owners(parent, child, 4).values()) == ["parent", "child", "parent", "child"]
