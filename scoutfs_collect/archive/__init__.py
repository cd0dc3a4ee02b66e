"""The archive: manifest assembly, streaming pack (write), reading (read) and finishing
the work dir of an interrupted run (recover)."""
