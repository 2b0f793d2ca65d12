"""Model adapters: the contract (base.py) and one file per model family, plus weight layouts and LoRA key formats."""
