"""Tiny classifiers: moved to scibert_pack.testing.tiny_models, which scripts/soak.py
shares (scripts never import tests/)."""

from scibert_pack.testing.tiny_models import *  # noqa: F403
