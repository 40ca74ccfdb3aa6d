"""Test helpers: tiny models, served stores, S3 servers, fake TorchServe contexts."""
