"""scibert-pack: a Hugging Face text classifier folder to a KServe deployment on TorchServe."""

from scibert_pack.errors import ScibertPackError

__version__ = "0.1.0"
__all__ = ["ScibertPackError", "__version__"]
