"""Helpers for testing what scibert-pack builds and serves, the way `click.testing` helps test
click commands: tiny classifiers of every BERT family made offline, a closed-loop soak with a
worker-memory check and a worker kill against a local TorchServe, and S3 stores, proxies and a
moto server that go away mid-upload.

The test suite (through tests/support/) and scripts/soak.py share them, so a script never
reaches into tests/. Some need the `dev` extra (moto, kserve-storage).
"""
