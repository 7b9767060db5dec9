"""EQUISeg: robust multimodal semantic segmentation with balanced modality contributions."""

from equiseg.config import ModelConfig
from equiseg.models import EQUISeg, create_model, list_models, load_mit_weights

__version__ = "0.1.0"

__all__ = ["EQUISeg", "ModelConfig", "create_model", "list_models", "load_mit_weights", "__version__"]
