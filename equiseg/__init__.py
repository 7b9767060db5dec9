"""EQUISeg: robust multimodal semantic segmentation with balanced modality contributions."""

__version__ = "0.1.0"
