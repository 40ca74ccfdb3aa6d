"""S3 stores, proxies and kubectl stand-in: moved to scibert_pack.testing.s3_stores_and_proxies, which scripts/soak.py
shares (scripts never import tests/)."""

from scibert_pack.testing.s3_stores_and_proxies import *  # noqa: F403
