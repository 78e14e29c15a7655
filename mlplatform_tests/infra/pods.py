"""Every pod the platform runs on Kubernetes, gathered from infra/ (manifests, Helm values, the run launcher),
and the two rule sets they are checked against: Pod Security "restricted" and the namespace's NetworkPolicies."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlplatform_tests.infra import chart

INFRA = chart.REPO / "infra"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[dict]:
    return [d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in docs(p)]


def manifest_pods() -> dict[str, dict]:
    """name -> pod template ({"metadata", "spec"}) of every workload in infra/k8s."""
    return {o["metadata"]["name"]: o["spec"]["template"] for o in k8s_objects() if o["kind"] in WORKLOAD_KINDS}


def all_pods(kubeconfig_dir: Path) -> dict[str, dict]:
    """name -> pod ({"metadata", "spec"}) for the manifests, the chart's Dagster pods and a run pod."""
    values = chart.load_values()
    pods = dict(manifest_pods())
    pods.update(chart.pod_specs_from_values(values))
    pods["run-worker"] = chart.run_job(values, kubeconfig_dir)["spec"]["template"]
    return pods


# Pod Security Standards, "restricted" profile (Kubernetes 1.31), the controls that apply to these pods:
# https://kubernetes.io/docs/concepts/security/pod-security-standards/
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
BASELINE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                    "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(spec: dict) -> list[str]:
    """What keeps this pod spec from passing Pod Security "restricted" (empty: it passes)."""
    problems = []
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl["name"] not in BASELINE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} not allowed")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("pod seccompProfile is Unconfined")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as UID 0")
    containers = [*(spec.get("initContainers") or []), *spec["containers"]]
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault/Localhost")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{where}: uses a hostPort")
    return problems


def _selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# Kubernetes labels every namespace with its name: what a namespaceSelector sees of the platform's own.
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": chart.NAMESPACE}


def _peer_admits(peer: dict, pod_labels: dict, namespace_labels: dict | None) -> bool:
    """NetworkPolicy ``from`` peer semantics: a podSelector alone selects pods of the policy's own namespace; a
    namespaceSelector selects pods of the namespaces it matches (and, with a podSelector in the same peer, only
    the pods that match that too). ipBlock peers are never matched here (the policies use none)."""
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], namespace_labels or NAMESPACE_LABELS):
            return False
    elif "podSelector" not in peer or namespace_labels is not None:
        return False
    return _selects(peer.get("podSelector") or {}, pod_labels)


def ingress_allowed(policies: list[dict], source_labels: dict | None, target: dict, port: int | str,
                    source_namespace: dict | None = None) -> bool:
    """Whether a TCP connection from a pod with ``source_labels`` (None: not a pod, e.g. from outside the
    cluster) to ``target`` (a pod) on ``port`` passes the namespace's NetworkPolicies. The source pod is in the
    platform's namespace unless ``source_namespace`` gives the labels of another one. Named ports resolve
    through the target's container ports, as Kubernetes does."""
    labels = target["metadata"].get("labels") or {}
    named = {p["name"]: p["containerPort"] for c in target["spec"]["containers"] for p in c.get("ports") or []
             if "name" in p}
    selecting = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and _selects(p["spec"]["podSelector"], labels)]
    if not selecting:
        return True  # no policy isolates this pod
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = [named.get(p["port"], p["port"]) for p in rule.get("ports") or []]
            if ports and named.get(port, port) not in ports:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            if source_labels is not None and any(_peer_admits(peer, source_labels, source_namespace)
                                                 for peer in peers):
                return True
    return False
