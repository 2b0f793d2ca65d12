"""The toy world, its pretraining scripts and the pretrained toy model (see MODEL_CARD.md)."""
