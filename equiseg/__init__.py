"""EQUISeg: robust multimodal semantic segmentation with balanced modality contributions."""

# importing equiseg changes no process-wide setting: the `equiseg` command applies the CPU allocator
# setting when it starts, and a script that wants the same calls configure_cpu_allocator() itself
from equiseg.config import ExperimentConfig, ModelConfig, load_experiment
from equiseg.engine.allocator import configure_cpu_allocator
from equiseg.models import EQUISeg, create_model, list_models, load_mit_weights


def __getattr__(name: str):
    # the engine (and its data dependencies) loads on first use: `import equiseg` stays light
    if name in ("train", "evaluate", "load", "load_model"):
        from equiseg import api

        return getattr(api, name)
    if name == "from_pretrained":
        from equiseg.tasks.export import from_pretrained

        return from_pretrained
    if name == "predict":
        from equiseg.tasks.predict import predict

        return predict
    raise AttributeError(f"module 'equiseg' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "EQUISeg",
    "ExperimentConfig",
    "ModelConfig",
    "configure_cpu_allocator",
    "create_model",
    "evaluate",
    "from_pretrained",
    "list_models",
    "load",
    "load_experiment",
    "load_mit_weights",
    "load_model",
    "predict",
    "train",
    "__version__",
]
