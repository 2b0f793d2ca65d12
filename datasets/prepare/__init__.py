"""prepare.py's pipeline: request.py (what to make), job.py (the job function `prepare_job` and its summary),
stages.py (the stages in order), folder.py (the job folder's manifest and atomic writes), captions.py."""
