"""Masks: file I/O and binarization (io.py), morphology, the paper's presets, the automatic mask (auto.py), SAM2.

Files use white = may change / black = keep; ``masks.io.to_keep_mask`` converts once to the paper's
m_condition (1 = preserve, 0 = generate), the only convention used past the I/O boundary. (Packing that mask
onto a model's latent grid is the model family's: models/<family>/packing.py.)

Importing the package imports none of its modules: prepare.py's --help reads masks.auto's defaults without torch.
"""
