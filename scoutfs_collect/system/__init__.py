"""The one owner of each OS interface: child processes (proc), tracefs, the kernel log
(kernel_log), pcap files, the host lock and paths/fsync. Nothing else touches these."""
