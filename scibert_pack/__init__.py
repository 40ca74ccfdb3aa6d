"""scibert-pack: a Hugging Face text classifier folder to a KServe deployment on TorchServe."""

from pkgutil import extend_path

from scibert_pack.errors import ScibertPackError

__version__ = "0.1.0"
__all__ = ["ScibertPackError", "__version__"]

# Run from the repository root, this folder comes first on sys.path and holds none of the other
# folders (archiver/, handlers/, ... install as scibert_pack.archiver, ...): extend_path adds the
# editable install's scibert_pack/ so they import there too. A no-op for an installed wheel.
__path__ = extend_path(__path__, __name__)
