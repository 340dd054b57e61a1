"""The benchmark's workloads, one module each: timed (burst, isolation, steady, short, scale,
flaky, signing: bench.workloads.catalogue names them), celery_tasks, idle, rates, and the opt-in
page, retention and claim_size."""
