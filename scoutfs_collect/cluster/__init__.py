"""The cluster coordinator (``scoutfs-collect cluster``) on ClusterShell, and the node side
it drives (``run --control-stdin``)."""
