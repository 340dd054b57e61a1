"""`make bench`: lateness, duplicates, throughput and cost of timers against plain Celery `eta` and
the seed design, on this machine, in one run."""
