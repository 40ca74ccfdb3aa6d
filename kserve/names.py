"""Kubernetes and KServe name rules, and resource quantities, checked before any YAML is made."""

from __future__ import annotations

import re

from scibert_pack.archiver.settings import MAX_NAME_LENGTH, NAME_PATTERN, quoted
from scibert_pack.errors import InputError

# DNS-1035 label: what KServe requires of an InferenceService name (it becomes a Service name).
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# DNS-1123 label: namespaces, container and port names.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# DNS-1123 subdomain: most other object names (ServingRuntime, PVC, ServiceAccount, ConfigMap).
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# Kubernetes resource.Quantity, as the CRD's own pattern spells it.
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# A container image reference as Docker's distribution/reference grammar spells it, loosely:
# [registry[:port]/]path[:tag][@digest]; lowercase path components, no spaces or control chars.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMAGE = re.compile(
    r"^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
    rf"(:{_TAG})?(@[a-z0-9]+:[0-9a-fA-F]{{32,}})?$"
)
_IMAGE_TAG = re.compile(rf"^{_TAG}$")
# A package version as a Dockerfile's pip line and a base image tag may carry it (PEP 440,
# local version included: 2.13.0+cpu).
PACKAGE_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_!-]{0,63}$")

# KServe names the predictor's Knative Service NAME-predictor, which must stay a 63-char label.
_PREDICTOR_SUFFIX = "-predictor"
MAX_ISVC_NAME = 63 - len(_PREDICTOR_SUFFIX)


def check_isvc_name(name: str) -> str:
    if len(name) > MAX_ISVC_NAME or not _DNS1035.fullmatch(name):
        raise InputError(
            f"InferenceService name {name!r} is not valid",
            fix=(
                f"use at most {MAX_ISVC_NAME} characters of a-z, 0-9 and '-', starting with a "
                "letter and ending with a letter or digit (KServe adds '-predictor' to it), "
                "e.g. 'scibert-abstracts'"
            ),
        )
    return name


def isvc_name_for(model_name: str) -> str:
    """A DNS-1035 InferenceService name from a TorchServe model name: SciBERT_v1 -> scibert-v1."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = name if name[:1].isalpha() else f"m-{name}"
    return check_isvc_name(name[:MAX_ISVC_NAME].rstrip("-"))


def check_label_name(name: str, what: str) -> str:
    if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
        raise InputError(
            f"{what} {name!r} is not a valid Kubernetes name",
            fix="use at most 63 characters of a-z, 0-9 and '-', starting and ending alphanumeric",
        )
    return name


def check_object_name(name: str, what: str) -> str:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise InputError(
            f"{what} {name!r} is not a valid Kubernetes name",
            fix=(
                "use at most 253 characters of a-z, 0-9, '-' and '.', starting and ending "
                "alphanumeric"
            ),
        )
    return name


def check_model_name(name: str) -> str:
    # The rule `build` names models by: they end up in URL paths, /v2/models/NAME/infer.
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise InputError(
            f"model name {name!r} cannot be used in request URLs",
            fix="use letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return name


def check_quantity(value: str, what: str, example: str) -> str:
    if not _QUANTITY.fullmatch(value) or value.startswith(("-", "+")):
        raise InputError(
            f"{what} {value!r} is not a Kubernetes quantity",
            fix=f"give a positive quantity such as {example}",
        )
    return value


def check_image(value: str, what: str = "--image") -> str:
    """An image reference that goes into YAML and a Dockerfile's FROM line as it is."""
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise InputError(
            f"{what} {quoted(value)} is not a container image reference",
            fix="give REGISTRY/PATH:TAG in lowercase with no spaces, e.g. "
            "'registry.example.com/ml/scibert-pack-torchserve:0.12.0-cpu'",
        )
    return value


def check_image_tag(value: str, what: str) -> str:
    if not _IMAGE_TAG.fullmatch(value):
        raise InputError(
            f"{what} {quoted(value)} is not an image tag",
            fix="give at most 128 characters of letters, digits, '_', '.' and '-', "
            "e.g. '0.12.0-cpu'",
        )
    return value
