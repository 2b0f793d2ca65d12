"""The work behind train.py, infer.py, evaluate.py and --plan, one subpackage per task, each with a job function
that takes a config, reports through a progress callback (config.progress) and returns a result object.

Layers, lowest first (an import only points down): encode/ (encode once, the cache) < infer/ < evaluate/ < train/
< plan/. Training previews may call infer/ and evaluate/; the planner traces train/'s own step.
"""
