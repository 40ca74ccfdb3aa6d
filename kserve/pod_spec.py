"""What a pod of a written manifest would run, read from the YAML `scibert-pack manifest` wrote.

KServe builds the predictor pod from the InferenceService and the ServingRuntime it selects:
the runtime's container, with the InferenceService's `model` fields merged in (args appended,
env merged by name). Kubernetes fills the probe defaults. This module does the same, as data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from scibert_pack.errors import InputError
from scibert_pack.kserve.options import STOCK_RUNTIME

ProbeKind = Literal["httpGet", "tcpSocket", "exec", "grpc"]
_REHEARSE_FIX = "pass the file `scibert-pack manifest -o FILE` wrote"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Kubernetes expands $(VAR) in command and args from the container's env; $$ is a literal $.
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class Probe:
    kind: ProbeKind
    # The probe's port as a number (named ports resolved); None for exec probes.
    port: int | None
    path: str
    initial_delay_s: float
    period_s: float
    timeout_s: float
    failure_threshold: int
    success_threshold: int
    # An exec probe's command.
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f"GET :{self.port}{self.path}" if self.kind == "httpGet" else f"{self.kind}"
        if self.kind == "tcpSocket":
            where = f"TCP connect :{self.port}"
        elif self.kind == "exec":
            where = f"exec {self.command[0] if self.command else '?'} ..."
        return (
            f"{where} after {self.initial_delay_s:g} s, every {self.period_s:g} s, "
            f"failureThreshold {self.failure_threshold}"
        )


@dataclass(frozen=True)
class Security:
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None
    supplemental_groups: tuple[int, ...]
    run_as_non_root: bool
    read_only_root: bool
    no_new_privileges: bool
    # Capabilities a root container keeps: the runtime's default set minus `drop`, plus `add`.
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    # env entries taken from Secrets/ConfigMaps (valueFrom): a cluster fills them, not us.
    env_from_cluster: tuple[str, ...]
    ports: tuple[int, ...]
    working_dir: str | None
    readiness: Probe | None
    liveness: Probe | None
    startup: Probe | None
    security: Security

    @property
    def argv(self) -> tuple[str, ...]:
        """command + args with Kubernetes' $(VAR) expansion, as the kubelet would exec them."""
        env = dict(self.env)
        return tuple(_expand(word, env) for word in (*self.command, *self.args))


@dataclass(frozen=True)
class PodPlan:
    isvc_name: str
    namespace: str | None
    protocol: Literal["v1", "v2"]
    storage_uri: str
    model_format: str
    runtime_name: str
    # "RawDeployment" or "Serverless" (Knative): it decides who probes and what ports may be.
    deployment_mode: str
    stock: bool
    # The stock runtime's image tag (runtimeVersion) and the GPUs the predictor asks for.
    runtime_version: str | None
    gpu: int
    # Our runtime's container; None for the stock runtime (it is not in the file).
    container: Container | None
    runtime_formats: tuple[str, ...] = ()
    runtime_protocols: tuple[str, ...] = ()


def read_plan(path: Path) -> PodPlan:
    """The pod of the InferenceService in the manifest at `path`; InputError when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"manifest {path} does not exist", fix=_REHEARSE_FIX) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"manifest {path} is not readable ({err})", fix=_REHEARSE_FIX) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InputError(f"manifest {path} is not YAML ({err})", fix=_REHEARSE_FIX) from None
    if not all(isinstance(d, dict) for d in documents):
        raise InputError(
            f"manifest {path} holds a document that is not a mapping", fix=_REHEARSE_FIX
        )
    return plan_from_documents(documents, source=str(path))


def plan_from_documents(documents: list[dict[str, Any]], *, source: str) -> PodPlan:
    services = [d for d in documents if d.get("kind") == "InferenceService"]
    if len(services) != 1:
        raise InputError(
            f"{source} holds {len(services)} InferenceServices, expected exactly one",
            fix="rehearse one `scibert-pack manifest` output at a time (not --only storage)",
        )
    isvc = services[0]
    meta = _mapping(isvc.get("metadata"), "InferenceService metadata", source)
    predictor = _mapping(
        _mapping(isvc.get("spec"), "InferenceService spec", source).get("predictor"),
        "spec.predictor",
        source,
    )
    model = _mapping(predictor.get("model"), "spec.predictor.model", source)
    name = str(meta.get("name") or "")
    protocol = str(model.get("protocolVersion") or "v1")
    if protocol not in ("v1", "v2"):
        raise InputError(
            f"{source}: protocolVersion {protocol!r} is not v1 or v2", fix=_REHEARSE_FIX
        )
    runtime_name = str(model.get("runtime") or "")
    annotations = meta.get("annotations") or {}
    mode = str(annotations.get("serving.kserve.io/deploymentMode") or "Serverless")
    storage_uri = str(model.get("storageUri") or "")
    model_format = str((model.get("modelFormat") or {}).get("name") or "")
    limits = (model.get("resources") or {}).get("limits") or {}
    common: dict[str, Any] = {
        "isvc_name": name,
        "namespace": meta.get("namespace"),
        "protocol": protocol,
        "storage_uri": storage_uri,
        "model_format": model_format,
        "runtime_name": runtime_name,
        "deployment_mode": mode,
        "runtime_version": model.get("runtimeVersion"),
        "gpu": int(limits.get("nvidia.com/gpu", 0)),
    }
    runtimes = [
        d
        for d in documents
        if d.get("kind") in ("ServingRuntime", "ClusterServingRuntime")
        and (d.get("metadata") or {}).get("name") == runtime_name
    ]
    if runtime_name == STOCK_RUNTIME and not runtimes:
        return PodPlan(**common, stock=True, container=None)
    if not runtimes:
        raise InputError(
            f"{source}: the InferenceService runs runtime {runtime_name!r}, which is not in the "
            "file, so its container is unknown",
            fix="rehearse the whole `scibert-pack manifest` output (it writes the runtime too)",
        )
    spec = _mapping(runtimes[0].get("spec"), "ServingRuntime spec", source)
    containers = spec.get("containers") or []
    if not containers or not isinstance(containers[0], dict):
        raise InputError(f"{source}: ServingRuntime {runtime_name!r} has no containers")
    formats = tuple(
        str(f.get("name")) for f in spec.get("supportedModelFormats") or [] if isinstance(f, dict)
    )
    pod_security = {
        **_mapping(spec.get("securityContext") or {}, "runtime securityContext", source),
        **_mapping(predictor.get("securityContext") or {}, "predictor securityContext", source),
    }
    container = _container(containers[0], model, pod_security, name, source)
    return PodPlan(
        **common,
        stock=False,
        container=container,
        runtime_formats=formats,
        runtime_protocols=tuple(str(p) for p in spec.get("protocolVersions") or []),
    )


def _container(
    raw: dict[str, Any],
    model: dict[str, Any],
    pod_security: dict[str, Any],
    isvc_name: str,
    source: str,
) -> Container:
    # KServe's merge: the InferenceService's model container fields on top of the runtime's.
    env: dict[str, str] = {}
    from_cluster: list[str] = []
    for entry in [*(raw.get("env") or []), *(model.get("env") or [])]:
        key = str(entry.get("name", ""))
        if not _ENV_NAME.fullmatch(key):
            raise InputError(f"{source}: env name {key!r} is not a valid variable name")
        if "valueFrom" in entry:
            from_cluster.append(key)
            env.pop(key, None)
        else:
            env[key] = str(entry.get("value", ""))
    ports: dict[str, int] = {}
    numbers: list[int] = []
    for port in raw.get("ports") or []:
        number = int(port["containerPort"])
        numbers.append(number)
        if port.get("name"):
            ports[str(port["name"])] = number
    security = {**pod_security, **(raw.get("securityContext") or {})}
    return Container(
        name=str(raw.get("name") or "kserve-container"),
        image=str(raw.get("image") or ""),
        command=tuple(_template(str(w), isvc_name) for w in raw.get("command") or []),
        args=tuple(
            _template(str(w), isvc_name) for w in [*(raw.get("args") or []), *model.get("args", [])]
        ),
        env=tuple(env.items()),
        env_from_cluster=tuple(from_cluster),
        ports=tuple(numbers),
        working_dir=raw.get("workingDir"),
        readiness=_probe(raw.get("readinessProbe"), ports, source),
        liveness=_probe(raw.get("livenessProbe"), ports, source),
        startup=_probe(raw.get("startupProbe"), ports, source),
        security=Security(
            run_as_user=_int_or_none(security.get("runAsUser")),
            run_as_group=_int_or_none(security.get("runAsGroup")),
            fs_group=_int_or_none(pod_security.get("fsGroup")),
            supplemental_groups=tuple(int(g) for g in pod_security.get("supplementalGroups") or []),
            run_as_non_root=bool(security.get("runAsNonRoot", False)),
            read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False,
            capabilities=_capabilities(security.get("capabilities") or {}),
        ),
    )


def _probe(raw: Any, ports: dict[str, int], source: str) -> Probe | None:
    if not isinstance(raw, dict):
        return None
    kind: ProbeKind
    for kind in ("httpGet", "tcpSocket", "exec", "grpc"):
        if kind in raw:
            break
    else:
        raise InputError(f"{source}: a probe has no httpGet, tcpSocket, exec or grpc handler")
    action = raw.get(kind) or {}
    port: int | None = None
    if "port" in action:
        value = action["port"]
        if isinstance(value, str) and not value.isdigit():
            if value not in ports:
                raise InputError(
                    f"{source}: probe port {value!r} names no containerPort "
                    f"(named ports: {', '.join(ports) or 'none'})"
                )
            port = ports[value]
        else:
            port = int(value)
    # Kubernetes' defaults for the fields a probe leaves out.
    return Probe(
        kind=kind,
        port=port,
        path=str(action.get("path") or "/"),
        initial_delay_s=float(raw.get("initialDelaySeconds", 0)),
        period_s=float(raw.get("periodSeconds", 10)),
        timeout_s=float(raw.get("timeoutSeconds", 1)),
        failure_threshold=int(raw.get("failureThreshold", 3)),
        success_threshold=int(raw.get("successThreshold", 1)),
        command=tuple(str(w) for w in action.get("command") or []) if kind == "exec" else (),
    )


# What containerd and Docker give a container's root by default (no CAP_SYS_ADMIN: no mounts).
DEFAULT_CAPABILITIES = (
    "audit_write", "chown", "dac_override", "fowner", "fsetid", "kill", "mknod",
    "net_bind_service", "net_raw", "setfcap", "setgid", "setpcap", "setuid", "sys_chroot",
)  # fmt: skip


def _capabilities(raw: dict[str, Any]) -> tuple[str, ...]:
    def names(key: str) -> set[str]:
        return {str(c).lower().removeprefix("cap_") for c in raw.get(key) or []}

    dropped, added = names("drop"), names("add")
    kept = set() if "all" in dropped else set(DEFAULT_CAPABILITIES) - dropped
    return tuple(sorted(kept | (added - {"all"})))


def _template(word: str, isvc_name: str) -> str:
    # The one ServingRuntime template field a runtime for a single model may use.
    return word.replace("{{.Name}}", isvc_name)


def _expand(word: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, word)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _mapping(value: Any, what: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{source}: {what} is missing or not a mapping", fix=_REHEARSE_FIX)
    return value
