"""The kubectl steps that copy a store into a PVC when the claim is not mounted here.

Same layout and guarantees as the filesystem backend: copy into a staging folder on the claim,
check every file's sha256 there, then rename it to the version folder in one step.
"""

from __future__ import annotations

import posixpath
import shlex

from scibert_pack.storage.local_store import LocalStore
from scibert_pack.storage.targets import PvcTarget

POD = "scibert-pack-copy"
_MOUNT = "/mnt/pvc"

_POD_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  restartPolicy: Never
  containers:
    - name: copy
      image: busybox:1.36
      command: ["sleep", "3600"]
      volumeMounts:
        - name: store
          mountPath: {mount}
  volumes:
    - name: store
      persistentVolumeClaim:
        claimName: {claim}
"""


def pvc_storage_uri(target: PvcTarget, store: LocalStore) -> str:
    return f"{target.uri}/{store.version}"


def kubectl_steps(store: LocalStore, target: PvcTarget) -> str:
    """A shell script (comments + commands) a user can read and run as is."""
    base = posixpath.join(_MOUNT, target.path) if target.path else _MOUNT
    final = posixpath.join(base, store.version)
    staging = posixpath.join(base, f".{store.version}.partial")
    sums = "".join(f"{f.sha256}  {f.path}\n" for f in store.files)
    q = shlex.quote
    prepare = f"rm -rf {q(staging)} && mkdir -p {q(base)}"
    check = f"cd {q(staging)} && sha256sum -c -"
    publish = f"test ! -e {q(final)} && mv {q(staging)} {q(final)}"
    manifest = _POD_MANIFEST.format(pod=POD, mount=_MOUNT, claim=target.claim)
    return f"""\
# No --pvc-mount given: nothing was copied. To put {store.root} on {target.uri},
# run these steps in the namespace of the InferenceService (add -n NAMESPACE to each kubectl),
# or mount the claim on this machine and rerun with --pvc-mount DIR.

# 1. A pod that mounts the claim
kubectl apply -f - <<'EOF'
{manifest}EOF
kubectl wait --for=condition=Ready pod/{POD} --timeout=180s

# 2. Copy into a staging folder, check every sha256, then rename it in one step
kubectl exec {POD} -- sh -c {q(prepare)}
kubectl cp {q(str(store.root))} {POD}:{q(staging)}
kubectl exec -i {POD} -- sh -c {q(check)} <<'EOF'
{sums}EOF
kubectl exec {POD} -- sh -c {q(publish)}

# 3. Remove the copy pod
kubectl delete pod {POD}

# storageUri for the InferenceService:
# {pvc_storage_uri(target, store)}
"""
