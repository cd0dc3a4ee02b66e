"""Reading the scoutfs kernel interfaces (sysfs counters, quorum, fence requests)."""
