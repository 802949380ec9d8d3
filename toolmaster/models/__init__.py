"""Model loading: SmolLM2 from its PyPI package (GGUF -> cached HF safetensors), tiny random models, HF paths, LoRA."""

from toolmaster.models.loading import LoadedModel, load_model, smollm2_dir

__all__ = ["LoadedModel", "load_model", "smollm2_dir"]
