"""Encode once: samples -> VAE latents, text and image embeddings through the on-disk cache (cache.py, samples.py)."""
