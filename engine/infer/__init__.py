"""infer.py's work: job.py (the job function `run_inference`, the sidecar and replay), generate.py (LoRAs, sample,
encode, sample, decode), sampler.py (the flow-matching loop, expert by timestep), outputs.py (the files written)."""
