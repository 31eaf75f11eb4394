"""Running an annotate job: the job spec, one process, workers, a Ray cluster."""
