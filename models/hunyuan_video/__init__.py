"""HunyuanVideo-I2V, the 33-channel `latent_concat` model: spec.py (its registry record), adapter.py, loading.py +
layouts.py (the weight layouts users download), lora_formats.py (LoRA file layouts), packing.py (the 1-channel latent
mask), plan.py (--plan's variant and input shapes), tiny.py (tiny random models in every layout, for tests).
Importing the package imports none of them: the registry reads spec.py alone."""
