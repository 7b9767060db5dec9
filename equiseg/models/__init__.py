"""EQUISeg models: MiT backbone, CMTB fusion, SegFormer head, SGM loss, registry, weight loading."""

from .equiseg import EQUISeg, LossOutput
from .fusion import CMTB, PPX, SelfQueryHub
from .head import SegFormerHead
from .losses import cross_entropy, ohem_cross_entropy
from .mit import MixVisionTransformer
from .registry import build_model, create_model, list_models, model_config, register_model
from .sgm import class_prototypes, sgm_loss
from .weights import (
    MIN_COVERAGE,
    LoadResult,
    convert_hf_to_original,
    describe_state_dict_mismatch,
    load_mit_weights,
    load_pretrained,
    load_state_dict_strict,
    read_state_dict,
)

__all__ = [
    "CMTB",
    "MIN_COVERAGE",
    "EQUISeg",
    "LoadResult",
    "LossOutput",
    "MixVisionTransformer",
    "PPX",
    "SegFormerHead",
    "SelfQueryHub",
    "build_model",
    "class_prototypes",
    "convert_hf_to_original",
    "create_model",
    "cross_entropy",
    "describe_state_dict_mismatch",
    "list_models",
    "load_mit_weights",
    "load_pretrained",
    "load_state_dict_strict",
    "model_config",
    "ohem_cross_entropy",
    "read_state_dict",
    "register_model",
    "sgm_loss",
]
