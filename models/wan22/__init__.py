"""Wan2.2-I2V-A14B: two Wan2.1-I2V-shaped transformers (a high-noise and a low-noise expert) without CLIP.

spec.py (its registry record: the experts and the boundary, defaults), layouts.py (diffusers, the original release,
ComfyUI single files, and telling them from Wan2.1's), loading.py (WanWeights per expert), adapter.py (WanAdapter per
expert), plan.py (--plan), tiny.py (tiny two-expert models in every layout). Everything else (LoRA file layouts,
mask packing, the VAE and umT5 loaders) is Wan2.1's code in models/wan/. Importing the package imports none of them.
"""
