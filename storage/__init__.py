"""Upload a built model store to S3 or a PVC as an immutable, verified version.

targets (STORAGE_URI parsing) -> local_store (check and hash OUT) -> resolve (pick a backend:
s3 or filesystem, both behind backend.Backend) -> sync (plan, then upload in a safe order and
write the completion record last). kubectl_steps covers a PVC that is not mounted here.
"""
