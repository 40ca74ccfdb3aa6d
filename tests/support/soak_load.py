"""The soak and worker-kill harness: moved to scibert_pack.testing.soak_load, which scripts/soak.py
shares (scripts never import tests/)."""

from scibert_pack.testing.soak_load import *  # noqa: F403
