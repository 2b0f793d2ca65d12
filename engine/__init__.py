"""Training and sampling machinery shared by train.py and infer.py: the flow objective, the loop, the sampler."""
