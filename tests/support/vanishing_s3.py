"""The S3 server that goes away: moved to scibert_pack.testing.vanishing_s3, which scripts/soak.py
shares (scripts never import tests/)."""

from scibert_pack.testing.vanishing_s3 import *  # noqa: F403
