"""train.py's work: job.py (the job function `run_training`), trainer.py (the DeepSpeed run, expert by expert),
batches.py + flow.py (deterministic micro-batches of the rectified-flow objective), distributed.py, run_dir.py."""
