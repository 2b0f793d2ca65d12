"""evaluate.py's work: job.py (inputs and the job function `run_evaluation`), metrics.py, clip.py (CLIP metrics),
plot.py, report.py."""
