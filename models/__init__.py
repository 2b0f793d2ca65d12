"""Base models behind one expert-aware contract, one folder per family.

registry.py   the families: one `FamilySpec` each (family.py), `make_adapter`, `detect_family`, per-family defaults
base.py       the adapter contract (`ModelAdapter`, experts chosen by timestep, the layer list)
lora.py       LoRA on a loaded transformer (add, load any layout, save); lora_files.py: the file mechanics
loading.py    shared weight-loading helpers; dtypes.py; packing.py (mask pooling); offload.py (block swap);
planning.py   what --plan needs of a family
wan/, hunyuan_video/   everything one family is (see their __init__)

Importing this package imports nothing heavy: `models.registry` answers questions about families without torch.
"""
