"""Models, laid out like timm: ``backbones/`` (MiT), ``modules/`` (hub, PPX, CMTB, heads ...: each
once), one file per architecture (``equiseg.py`` ...), the common interface (``base.py``), the registry,
weight loading, and the one loader of saved models (:func:`load_model`, ``loading.py``)."""

from .backbones import MixVisionTransformer
from .base import LossOutput, SegModel
from .cmnext import CMNeXt
from .cmx import CMX
from .equiseg import EQUISeg
from .loading import LoadedModel, ModelFile, load_model, model_from_checkpoint, read_model_file
from .losses import cross_entropy, ohem_cross_entropy
from .magic import MAGIC, MAGICPlusPlus
from .modules import CMTB, PPX, SegFormerHead, SelfQueryHub
from .reference import ReferenceLoad, detect_release, load_reference_checkpoint, load_reference_state_dict
from .registry import (
    build_model,
    create_model,
    list_architectures,
    list_models,
    model_config,
    register_architecture,
    register_model,
)
from .segformer import SegFormer
from .sgm import class_prototypes, sgm_loss
from .stitchfusion import StitchFusion
from .weights import (
    MIN_COVERAGE,
    LoadResult,
    convert_hf_to_original,
    describe_state_dict_mismatch,
    load_mit_state_dict,
    load_mit_weights,
    load_pretrained,
    load_state_dict_strict,
    read_state_dict,
)

__all__ = [
    "CMNeXt",
    "CMTB",
    "CMX",
    "MAGIC",
    "MAGICPlusPlus",
    "SegFormer",
    "StitchFusion",
    "MIN_COVERAGE",
    "EQUISeg",
    "LoadResult",
    "LoadedModel",
    "LossOutput",
    "MixVisionTransformer",
    "ModelFile",
    "PPX",
    "ReferenceLoad",
    "SegFormerHead",
    "SegModel",
    "SelfQueryHub",
    "build_model",
    "class_prototypes",
    "convert_hf_to_original",
    "create_model",
    "cross_entropy",
    "describe_state_dict_mismatch",
    "detect_release",
    "list_architectures",
    "list_models",
    "load_mit_state_dict",
    "load_mit_weights",
    "load_model",
    "load_pretrained",
    "load_reference_checkpoint",
    "load_reference_state_dict",
    "load_state_dict_strict",
    "model_config",
    "model_from_checkpoint",
    "ohem_cross_entropy",
    "read_model_file",
    "read_state_dict",
    "register_architecture",
    "register_model",
    "sgm_loss",
]
