"""--plan: job.py (`run_plan`), model.py (the job's full-size transformer on the meta device), steps.py + trace.py
(one step traced), report.py, advice.py, gpus.py, measure.py (real CPU steps, to check the plan)."""
