"""The Dockerfile of our ServingRuntime's image: TorchServe 0.12 plus the handler's libraries.

TorchServe 0.12's own images run Python 3.9. An archive built on 3.9 gets that image as its base;
one built on a newer Python (transformers 5 needs 3.10+) gets the same TorchServe 0.12 from PyPI
on the Python it was built with, with the JDK 17 TorchServe needs.
"""

from __future__ import annotations

from scibert_pack import __version__
from scibert_pack.kserve.deployment_values import DeploymentValues

TORCHSERVE_IMAGE_PYTHON = "3.9"
_CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


def dockerfile(r: DeploymentValues, *, filename: str = "Dockerfile") -> str:
    head = (
        f"# Image of the {r.options.runtime_name} ServingRuntime, written by "
        f"scibert-pack {__version__}.\n"
        "# Build and push it, then apply the manifest:\n"
        f"#   docker build -t {r.image} -f {filename} .\n"
        f"#   docker push {r.image}\n"
        "# The model store comes from the storageUri at run time, not from this image.\n"
    )
    python = ".".join(r.python_version.split(".")[:2])
    if python == TORCHSERVE_IMAGE_PYTHON:
        return head + _on_torchserve_image(r)
    return head + _on_python_image(r, python)


def _on_torchserve_image(r: DeploymentValues) -> str:
    return (
        f"FROM pytorch/torchserve:{r.torchserve_version}-{r.device}\n"
        "# transformers and captum at the versions the archive was built and tested with;\n"
        "# torch stays the base image's own build (CPU or CUDA to match it).\n"
        "RUN python -m pip install --no-cache-dir \\\n"
        f"    transformers=={r.transformers_version} \\\n"
        f"    captum=={r.captum_version} \\\n"
        f"    safetensors{_onnxruntime(r)}\n"
    )


def _on_python_image(r: DeploymentValues, python: str) -> str:
    torch_index = f" --index-url {_CPU_WHEELS}" if r.device == "cpu" else ""
    return (
        f"# The archive was built with Python {r.python_version}; TorchServe's images run "
        f"Python {TORCHSERVE_IMAGE_PYTHON}\n"
        "# so this image runs the build's Python with the same TorchServe, from PyPI.\n"
        f"FROM python:{python}-slim-bookworm\n"
        "# TorchServe's frontend is Java. (slim images lack the man folder the JDK links into.)\n"
        "RUN mkdir -p /usr/share/man/man1 \\\n"
        " && apt-get update \\\n"
        " && apt-get install -y --no-install-recommends openjdk-17-jre-headless \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        "# uid 1000 as in TorchServe's images: the ServingRuntime runs as that user.\n"
        "RUN useradd --create-home --uid 1000 model-server\n"
        f"RUN python -m pip install --no-cache-dir{torch_index} torch=={r.torch_version}\n"
        "# The versions the archive was built and tested with.\n"
        "RUN python -m pip install --no-cache-dir \\\n"
        f"    torchserve=={r.torchserve_version} \\\n"
        f"    transformers=={r.transformers_version} \\\n"
        f"    captum=={r.captum_version} \\\n"
        f"    safetensors{_onnxruntime(r)}\n"
        "USER model-server\n"
        "WORKDIR /home/model-server\n"
    )


def _onnxruntime(r: DeploymentValues) -> str:
    """Archives built with --runtime onnx predict through onnxruntime, at the build's version."""
    version = r.store.versions.get("onnxruntime") if r.store else None
    if not version or version == "not installed":
        return ""
    return f" \\\n    onnxruntime=={version}"
