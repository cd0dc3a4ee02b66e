"""The fence hook: run by scoutfs-fenced before the real fence agent."""
