"""Reading an archive (or a cluster bundle) back as one story: the merged timeline of
every source on one clock (:mod:`.timeline`), the history each ring really kept
(:mod:`.history`), and the Chrome trace-event export (:mod:`.perfetto`)."""
