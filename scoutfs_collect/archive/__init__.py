"""The archive: manifest assembly, streaming pack (write) through the compressors and
the free-space-checked output (compress), reading (read) and finishing the work dir of
an interrupted run (recover)."""
