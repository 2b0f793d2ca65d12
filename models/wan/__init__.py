"""Wan2.1-I2V: spec.py (its registry record), adapter.py, loading.py + layouts.py + keys.py (the weight layouts users
download), lora_formats.py (LoRA file layouts), packing.py (the 4-channel latent mask), plan.py (--plan's variants
and input shapes), tiny.py (tiny random models in every layout, for tests). Importing the package imports none of
them: the registry reads spec.py alone."""
