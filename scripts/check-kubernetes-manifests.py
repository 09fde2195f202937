#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests of Bulwark (kubectl kustomize output, one file per
target): built-in kinds against the Kubernetes schemas bundled in kubernetes-validate (strict,
offline), the Prometheus Operator objects structurally, and the project's rules: hardened pods,
resources and probes, a grace period that outlasts the node's own shutdown deadline (read from
the ConfigMap's bulwark.toml), pinned images, no secret values, objects that point at each
other, and a PrometheusRule equal to deploy/prometheus/alerts.yml.

Run by scripts/check-kubernetes.sh (`make k8s-check`), in the environment of
scripts/requirements-kubernetes.txt (Python >= 3.11 for tomllib):
    check-kubernetes-manifests.py check [--kubernetes-version 1.30] RENDERED.yaml...
    check-kubernetes-manifests.py self-test RENDERED.yaml   # every broken copy must fail
    check-kubernetes-manifests.py extract-rules RENDERED.yaml OUT.yml   # for promtool
"""

import argparse
import copy
import pathlib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    sys.exit("error: check-kubernetes-manifests.py needs Python >= 3.11 (tomllib)")

import kubernetes_validate
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
ALERTS_FILE = REPO / "deploy/prometheus/alerts.yml"
CONFIG_SOURCES = REPO / "config/src"

SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")
CUSTOM_KINDS = {SERVICE_MONITOR, PROMETHEUS_RULE}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

# The container's config file and the secret files (the image's layout; compose/Dockerfile).
CONFIG_DIR = "/etc/bulwark"
CONFIG_FILE_NAME = "bulwark.toml"
SECRET_NAME = "bulwark-secrets"
METRICS_KEY = "metrics_key"
WRITABLE_PATHS = ("/tmp", "/var/lib/bulwark")
# The Prometheus job the alert rules name (`up{job="bulwark"}`).
PROMETHEUS_JOB = "bulwark"
# Seconds of the grace period left after the preStop pause and the node's own deadline, for
# the kubelet's SIGKILL never to cut the node's last step.
MIN_GRACE_MARGIN_SECONDS = 5

# Values that look like credentials: a URL with a password, a Bulwark API key, a PEM block.
SECRET_PATTERNS = [
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@"), "a URL with a password"),
    (re.compile(r"\bbwk_[A-Za-z0-9_-]{16,}"), "a Bulwark API key"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
]
# Variables that would carry a secret's value; their *_FILE twins carry a path instead.
SECRET_VARIABLE = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|DATABASE_URL|AMQP_URL)$")


class Target:
    """The documents of one rendered file and the errors found in them."""

    def __init__(self, name, documents):
        self.name = name
        self.documents = documents
        self.errors = []

    def error(self, document, message):
        where = "" if document is None else f"{document.get('kind')}/{name_of(document)}: "
        self.errors.append(f"{self.name}: {where}{message}")

    def of_kind(self, *kinds):
        return [document for document in self.documents if document.get("kind") in kinds]


def name_of(document):
    return (document.get("metadata") or {}).get("name", "?")


def load_documents(path):
    with open(path) as file:
        return [document for document in yaml.safe_load_all(file) if document]


# ---------------------------------------------------------------------------- schemas


def check_schemas(target, kubernetes_version):
    """Validates built-in kinds strictly against the bundled schemas; custom kinds are checked
    by their own functions and any other kind is refused (no schema, no check)."""
    for document in target.documents:
        key = (document.get("apiVersion"), document.get("kind"))
        if key in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(document, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(item) for item in error.path)
            target.error(
                document,
                f"invalid for Kubernetes {kubernetes_version} at {path or '(top)'}: "
                f"{error.message}",
            )
        except kubernetes_validate.SchemaNotFoundError:
            target.error(
                document,
                f"no Kubernetes {kubernetes_version} schema for {key[0]} {key[1]}: a kind this "
                "check does not know",
            )


# ---------------------------------------------------------------------------- pods


def pod_templates(document):
    """Returns (pod metadata, pod spec) of a workload, or None."""
    kind = document.get("kind")
    spec = document.get("spec") or {}
    if kind == "Pod":
        return document.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def parse_cpu(quantity):
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


MEMORY_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def parse_memory(quantity):
    text = str(quantity)
    for unit, factor in MEMORY_UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def image_tag_problem(image):
    """Returns why an image reference is not pinned, or None."""
    if "@sha256:" in image:
        return None
    last_part = image.rsplit("/", 1)[-1]
    if ":" not in last_part:
        return f"image {image} has no tag (it means `latest`): pin a release tag or digest"
    tag = last_part.rsplit(":", 1)[1]
    if tag == "latest":
        return f"image {image} uses the `latest` tag: pin a release tag or digest"
    return None


def check_pod(target, document):
    pod_metadata, pod = pod_templates(document)
    long_running = document["kind"] in LONG_RUNNING_KINDS
    pod_security = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        target.error(
            document,
            "automountServiceAccountToken must be false (Bulwark never calls the API server)",
        )
    if pod_security.get("runAsNonRoot") is not True:
        target.error(document, "pod securityContext.runAsNonRoot must be true")
    if not pod_security.get("runAsUser"):
        target.error(
            document,
            "pod securityContext.runAsUser must be set and not 0 (the image's user is 10001)",
        )
    if pod_security.get("fsGroup") is None:
        target.error(
            document,
            "pod securityContext.fsGroup must be set (the emptyDirs and the secret files are "
            "group-owned)",
        )
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            target.error(document, f"{field} must not be set")
    if not pod.get("serviceAccountName") or pod.get("serviceAccountName") == "default":
        target.error(document, "serviceAccountName must name the application's own ServiceAccount")

    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    for volume in volumes.values():
        if "hostPath" in volume:
            target.error(document, f"volume {volume['name']} is a hostPath")
        config_map = (volume.get("configMap") or {}).get("name")
        if config_map and not any(
            name_of(other) == config_map for other in target.of_kind("ConfigMap")
        ):
            target.error(
                document,
                f"volume {volume['name']} names ConfigMap {config_map}, which is not rendered",
            )
        secret = volume.get("secret")
        if secret and secret.get("secretName") != SECRET_NAME:
            target.error(
                document,
                f"volume {volume['name']} mounts Secret {secret.get('secretName')}, not "
                f"{SECRET_NAME}",
            )

    containers = [(container, False) for container in pod.get("initContainers") or []]
    containers += [(container, True) for container in pod.get("containers") or []]
    for container, is_main in containers:
        check_container(target, document, pod, container, volumes, long_running and is_main)


def check_container(target, document, pod, container, volumes, needs_probes):
    name = container.get("name", "?")

    def fail(message):
        target.error(document, f"container {name}: {message}")

    pod_security = pod.get("securityContext") or {}
    security = container.get("securityContext") or {}
    if security.get("allowPrivilegeEscalation") is not False:
        fail("securityContext.allowPrivilegeEscalation must be false")
    if security.get("readOnlyRootFilesystem") is not True:
        fail("securityContext.readOnlyRootFilesystem must be true")
    if security.get("privileged"):
        fail("securityContext.privileged must not be true")
    if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
        fail("runAsNonRoot must be true (container or pod)")
    if security.get("runAsUser", pod_security.get("runAsUser")) in (0, None):
        fail("runAsUser must not be 0")
    capabilities = security.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        fail("securityContext.capabilities must drop ALL")
    if capabilities.get("add"):
        fail(f"securityContext.capabilities adds {capabilities['add']}")
    seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get(
        "type"
    )
    if seccomp not in ("RuntimeDefault", "Localhost"):
        fail("seccompProfile must be RuntimeDefault (container or pod)")

    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for resource in ("cpu", "memory"):
        if resource not in requests or resource not in limits:
            fail(f"resources.requests and resources.limits must both set {resource}")
    if (
        "cpu" in requests
        and "cpu" in limits
        and parse_cpu(requests["cpu"]) > parse_cpu(limits["cpu"])
    ):
        fail("the CPU request exceeds its limit")
    if (
        "memory" in requests
        and "memory" in limits
        and parse_memory(requests["memory"]) > parse_memory(limits["memory"])
    ):
        fail("the memory request exceeds its limit")

    problem = image_tag_problem(container.get("image", ""))
    if problem:
        fail(problem)

    if needs_probes:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if not container.get(probe):
                fail(f"{probe} must be set")

    mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts") or []}
    for path in WRITABLE_PATHS:
        mount = mounts.get(path)
        volume = volumes.get(mount["name"]) if mount else None
        if (
            not mount
            or mount.get("readOnly")
            or not volume
            or not ({"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(volume))
        ):
            fail(
                f"{path} must be a writable emptyDir or volume mount (the root filesystem is "
                "read-only)"
            )

    for variable in container.get("env") or []:
        variable_name, value = variable.get("name", ""), variable.get("value")
        if value is None:
            continue
        if variable_name.endswith("_FILE"):
            check_secret_file_variable(
                target, document, name, variable_name, value, mounts, volumes
            )
        elif SECRET_VARIABLE.search(variable_name):
            fail(f"env {variable_name} holds a value: give secrets as files ({variable_name}_FILE)")


def check_secret_file_variable(
    target, document, container_name, variable_name, path, mounts, volumes
):
    """A *_FILE variable must name a file that a mounted Secret provides."""
    directory, _, file_name = path.rpartition("/")
    mount = mounts.get(directory)
    secret = (volumes.get(mount["name"]) or {}).get("secret") if mount else None
    if not secret:
        target.error(
            document,
            f"container {container_name}: env {variable_name}={path} is not in a mounted Secret",
        )
        return
    items = secret.get("items")
    if items is not None and file_name not in [item.get("path") for item in items]:
        target.error(
            document,
            f"container {container_name}: env {variable_name}={path}: the Secret volume's items "
            f"do not provide {file_name}",
        )


# ---------------------------------------------------------------------------- the node's config


def config_field_names():
    """Returns (top-level sections, every field name) of the typed config in config/src: an
    approximation of its deny_unknown_fields tree that catches misspelt keys."""
    fields, sections = set(), set()
    for source in CONFIG_SOURCES.glob("*.rs"):
        text = source.read_text()
        fields.update(re.findall(r"^\s*pub (\w+):", text, flags=re.MULTILINE))
        root = re.search(r"pub struct Config \{(.*?)\n\}", text, flags=re.DOTALL)
        if root:
            sections.update(re.findall(r"pub (\w+):", root.group(1)))
    return sections, fields


def check_config_keys(target, document, table, sections, fields):
    for section, value in table.items():
        if section not in sections:
            target.error(
                document, f"bulwark.toml: [{section}] is not a section of the config (config/src)"
            )
            continue
        pending = [(section, value)] if isinstance(value, dict) else []
        while pending:
            path, node = pending.pop()
            for key, child in node.items():
                if path in ("providers", "jobs.kinds"):
                    continue
                if key not in fields:
                    target.error(
                        document, f"bulwark.toml: {path}.{key} is not a config key (config/src)"
                    )
                if isinstance(child, dict):
                    pending.append((f"{path}.{key}", child))


def node_config(target, deployment, container):
    """Returns the parsed bulwark.toml the container reads, or None (reported)."""
    _, pod = pod_templates(deployment)
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    mount = next(
        (m for m in container.get("volumeMounts") or [] if m["mountPath"] == CONFIG_DIR), None
    )
    config_map_name = (
        ((volumes.get(mount["name"]) or {}).get("configMap") or {}).get("name") if mount else None
    )
    config_map = next(
        (cm for cm in target.of_kind("ConfigMap") if name_of(cm) == config_map_name), None
    )
    text = ((config_map or {}).get("data") or {}).get(CONFIG_FILE_NAME)
    if text is None:
        target.error(deployment, f"no ConfigMap with {CONFIG_FILE_NAME} is mounted at {CONFIG_DIR}")
        return None, None
    try:
        return config_map, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        target.error(config_map, f"{CONFIG_FILE_NAME} does not parse: {error}")
        return config_map, None


def env_value(container, variable_name):
    for variable in container.get("env") or []:
        if variable.get("name") == variable_name:
            return variable.get("value")
    return None


def prestop_seconds(container):
    """Returns the preStop pause in seconds (the kubelet's sleep action or an exec sleep)."""
    pre_stop = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"].get("seconds", 0))
    command = (pre_stop.get("exec") or {}).get("command") or []
    words = " ".join(str(word) for word in command).split()
    for index, word in enumerate(words[:-1]):
        if word.rsplit("/", 1)[-1] == "sleep" and words[index + 1].rstrip(";").isdigit():
            return int(words[index + 1].rstrip(";"))
    return None


def check_deployment(target, deployment, sections, fields):
    _, pod = pod_templates(deployment)
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if (
        strategy.get("type") != "RollingUpdate"
        or rolling.get("maxUnavailable") != 0
        or rolling.get("maxSurge") != 1
    ):
        target.error(
            deployment,
            "strategy must be RollingUpdate with maxUnavailable 0 and maxSurge 1 (a new node is "
            "ready before an old one drains)",
        )
    if spec.get("replicas", 1) < 2:
        target.error(deployment, "replicas must be at least 2")
    spread_keys = {
        constraint.get("topologyKey") for constraint in pod.get("topologySpreadConstraints") or []
    }
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        if key not in spread_keys:
            target.error(deployment, f"topologySpreadConstraints must spread over {key}")

    containers = pod.get("containers") or []
    container = next(
        (c for c in containers if c.get("name") == "bulwark"), containers[0] if containers else None
    )
    if container is None:
        target.error(deployment, "has no container")
        return
    config_map, config = node_config(target, deployment, container)
    if config is None:
        return
    check_config_keys(target, config_map, config, sections, fields)

    # The node's own deadline, as the node resolves it: the variable wins over the file.
    timeout_ms = env_value(container, "BULWARK__SHUTDOWN__TIMEOUT_MS") or (
        config.get("shutdown") or {}
    ).get("timeout_ms")
    if timeout_ms is None:
        target.error(
            config_map,
            "bulwark.toml must set shutdown.timeout_ms: the grace period is checked against it",
        )
        return
    timeout_seconds = int(timeout_ms) / 1000
    pause = prestop_seconds(container)
    if pause is None:
        target.error(
            deployment,
            "container bulwark: lifecycle.preStop must pause (sleep) so endpoints stop sending "
            "before SIGTERM",
        )
        pause = 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pause + timeout_seconds + MIN_GRACE_MARGIN_SECONDS:
        target.error(
            deployment,
            f"terminationGracePeriodSeconds {grace} must be at least the preStop pause "
            f"({pause} s) + shutdown.timeout_ms ({timeout_seconds:g} s) + a "
            f"{MIN_GRACE_MARGIN_SECONDS} s margin: "
            "the kubelet would SIGKILL a node that is still draining",
        )
    liveness = container.get("livenessProbe") or {}
    window = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
    if liveness and window < timeout_seconds:
        target.error(
            deployment,
            f"livenessProbe window {window} s is shorter than shutdown.timeout_ms "
            f"({timeout_seconds:g} s): a drain could be cut short",
        )

    # The listener, its port and the probes agree.
    addr = env_value(container, "BULWARK_HTTP_ADDR") or (config.get("http") or {}).get(
        "addr", "127.0.0.1:8080"
    )
    host, _, port = addr.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        target.error(
            config_map,
            f"http.addr {addr} must listen on every interface (0.0.0.0) for probes and the Service",
        )
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if int(port) not in ports.values():
        target.error(deployment, f"container bulwark: http.addr port {port} is not a containerPort")
    for probe_name, path in (
        ("startupProbe", "/live"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/live"),
    ):
        http_get = (container.get(probe_name) or {}).get("httpGet") or {}
        if not http_get:
            continue
        if http_get.get("path") != path:
            target.error(deployment, f"{probe_name} must GET {path}")
        probe_port = http_get.get("port")
        if (ports.get(probe_port) if isinstance(probe_port, str) else probe_port) != int(port):
            target.error(
                deployment, f"{probe_name} port {probe_port} is not the node's port {port}"
            )

    sentiment = config.get("sentiment") or {}
    workers = int(sentiment.get("workers", 0))
    cpu_limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
    if (
        workers
        and cpu_limit
        and workers * int(sentiment.get("intra_op_threads", 1)) > parse_cpu(cpu_limit)
    ):
        target.error(
            config_map,
            f"sentiment.workers x intra_op_threads exceeds the container's CPU limit {cpu_limit}",
        )
    incidents_dir = (config.get("incidents") or {}).get("dir", "./reports/incidents")
    if not any(incidents_dir.startswith(path + "/") for path in WRITABLE_PATHS):
        target.error(
            config_map,
            f"incidents.dir {incidents_dir} is not under a writable mount {WRITABLE_PATHS}",
        )
    if "metrics" in ((config.get("auth") or {}).get("open_endpoints") or []):
        target.error(
            config_map, "auth.open_endpoints lists metrics: /metrics would be served without a key"
        )

    check_neighbours(target, deployment, pod, container, int(port))


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all(labels.get(key) == value for key, value in match.items())


def check_neighbours(target, deployment, pod, container, port):
    """The Service, budget, autoscaler, migration Job and network policy point at the pods."""
    pod_labels = (pod_templates(deployment)[0].get("labels")) or {}
    if not selects((deployment.get("spec") or {}).get("selector"), pod_labels):
        target.error(deployment, "spec.selector does not match the pod template's labels")
    services = [
        s
        for s in target.of_kind("Service")
        if selects((s.get("spec") or {}).get("selector"), pod_labels)
    ]
    if not services:
        target.error(deployment, "no Service selects its pods")
    port_names = {p.get("name") for p in container.get("ports") or []}
    for service in services:
        for service_port in (service.get("spec") or {}).get("ports") or []:
            target_port = service_port.get("targetPort", service_port.get("port"))
            if target_port not in port_names and target_port != port:
                target.error(service, f"targetPort {target_port} is not a port of the pods")
    budgets = [
        b
        for b in target.of_kind("PodDisruptionBudget")
        if selects((b.get("spec") or {}).get("selector"), pod_labels)
    ]
    if not budgets:
        target.error(deployment, "no PodDisruptionBudget selects its pods")
    autoscalers = [
        h
        for h in target.of_kind("HorizontalPodAutoscaler")
        if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name_of(deployment)
    ]
    for autoscaler in autoscalers:
        spec = autoscaler["spec"]
        if spec.get("minReplicas", 1) < 2:
            target.error(
                autoscaler, "minReplicas must be at least 2 (one node drains while another serves)"
            )
        if not any(
            m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"
            for m in spec.get("metrics") or []
        ):
            target.error(autoscaler, "must scale on CPU")
        for budget in budgets:
            min_available = (budget.get("spec") or {}).get("minAvailable")
            if isinstance(min_available, int) and min_available >= spec.get("minReplicas", 1):
                target.error(
                    budget,
                    f"minAvailable {min_available} leaves no pod to evict at minReplicas "
                    f"{spec.get('minReplicas')}",
                )
    for job in target.of_kind("Job"):
        job_containers = pod_templates(job)[1].get("containers") or []
        if any(c.get("image") != container.get("image") for c in job_containers):
            target.error(
                job,
                f"its image differs from the Deployment's ({container.get('image')}): migrations "
                "must come from the release that rolls out",
            )
    for policy in target.of_kind("NetworkPolicy"):
        if not selects((policy.get("spec") or {}).get("podSelector"), pod_labels):
            continue
        ingress_ports = [
            p.get("port")
            for rule in (policy["spec"].get("ingress") or [])
            for p in rule.get("ports") or []
        ]
        if port not in ingress_ports and not (port_names & set(ingress_ports)):
            target.error(policy, f"ingress does not admit the node's port {port}")


# README "Apply": step 2 applies `-l app.kubernetes.io/component!=server` (the migration Job and
# what it needs), step 3 the rest; this label must split the objects that way.
COMPONENT_LABEL = "app.kubernetes.io/component"


def component_of(document):
    return ((document.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL)


def check_apply_phases(target):
    for deployment in target.of_kind("Deployment"):
        if component_of(deployment) != "server":
            target.error(
                deployment,
                f"must carry {COMPONENT_LABEL}: server, or the migration step (README: Apply) "
                "would roll it out",
            )
    for job in target.of_kind("Job"):
        _, pod = pod_templates(job)
        needed = {("ServiceAccount", pod.get("serviceAccountName"))}
        needed |= {
            ("ConfigMap", (v.get("configMap") or {}).get("name"))
            for v in pod.get("volumes") or []
            if v.get("configMap")
        }
        for document in [job] + [
            d for d in target.documents if (d.get("kind"), name_of(d)) in needed
        ]:
            if component_of(document) == "server":
                target.error(
                    document,
                    f"carries {COMPONENT_LABEL}: server, so the migration step (README: Apply) "
                    "would not apply it",
                )


def check_job(target, job):
    spec = job.get("spec") or {}
    _, pod = pod_templates(job)
    if spec.get("backoffLimit") is None:
        target.error(job, "backoffLimit must be set")
    if spec.get("ttlSecondsAfterFinished") is None:
        target.error(job, "ttlSecondsAfterFinished must be set (finished Jobs are cleaned up)")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        target.error(job, "restartPolicy must be Never or OnFailure")
    for container in pod.get("containers") or []:
        if "migrate" not in (container.get("args") or []) + (container.get("command") or []):
            target.error(job, f"container {container.get('name')} does not run `migrate`")


# ---------------------------------------------------------------------------- monitoring


def check_service_monitor(target, monitor):
    spec = monitor.get("spec") or {}
    services = [
        s
        for s in target.of_kind("Service")
        if selects(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})
    ]
    if not services:
        target.error(monitor, "spec.selector selects no Service")
        return
    if spec.get("jobLabel") is None and not any(name_of(s) == PROMETHEUS_JOB for s in services):
        target.error(
            monitor,
            f"the scraped job would not be `{PROMETHEUS_JOB}`, the job the alert rules name",
        )
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        target.error(monitor, "spec.endpoints is empty")
    port_names = {p.get("name") for s in services for p in (s.get("spec") or {}).get("ports") or []}
    for endpoint in endpoints:
        if endpoint.get("port") not in port_names:
            target.error(
                monitor, f"endpoint port {endpoint.get('port')} is not a named port of the Service"
            )
        if endpoint.get("path") != "/metrics":
            target.error(monitor, "endpoint path must be /metrics")
        authorization = endpoint.get("authorization") or {}
        credentials = authorization.get("credentials") or {}
        if (
            authorization.get("type", "Bearer") != "Bearer"
            or credentials.get("name") != SECRET_NAME
            or credentials.get("key") != METRICS_KEY
        ):
            target.error(
                monitor,
                f"endpoint must send a Bearer token from Secret {SECRET_NAME} key {METRICS_KEY} "
                "(/metrics needs a read key)",
            )


def check_prometheus_rule(target, rule, alert_groups):
    groups = (rule.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        target.error(rule, "spec.groups must be a non-empty list")
        return
    for group in groups:
        if (
            not isinstance(group, dict)
            or not group.get("name")
            or not isinstance(group.get("rules"), list)
        ):
            target.error(rule, f"group {group!r:.60} needs a name and a rules list")
            continue
        for item in group["rules"]:
            if (
                not isinstance(item, dict)
                or not item.get("expr")
                or not (item.get("alert") or item.get("record"))
            ):
                target.error(
                    rule, f"group {group['name']}: every rule needs expr and alert or record"
                )
    if groups != alert_groups:
        target.error(
            rule,
            "spec.groups differ from deploy/prometheus/alerts.yml: run "
            "scripts/render-prometheus-rule.py",
        )


# ---------------------------------------------------------------------------- whole target


def iter_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_strings(value)


def check_target(target, kubernetes_version, alert_groups, sections, fields):
    """Runs every check over one rendered target; errors accumulate in target.errors."""
    check_schemas(target, kubernetes_version)
    namespaces = set()
    for document in target.documents:
        kind = document.get("kind")
        if kind not in CLUSTER_SCOPED_KINDS:
            namespaces.add((document.get("metadata") or {}).get("namespace"))
        if kind == "Secret":
            target.error(
                document,
                f"a Secret is rendered: {SECRET_NAME} is created out of band "
                "(deploy/kubernetes/secret.example.md)",
            )
        for text in iter_strings(document):
            for pattern, what in SECRET_PATTERNS:
                if pattern.search(text):
                    target.error(
                        document, f"holds what looks like {what}: secrets belong in {SECRET_NAME}"
                    )
        if kind in WORKLOAD_KINDS:
            check_pod(target, document)
    if len(namespaces) > 1:
        target.error(None, f"objects are spread over namespaces {sorted(map(str, namespaces))}")
    for deployment in target.of_kind("Deployment"):
        check_deployment(target, deployment, sections, fields)
    for job in target.of_kind("Job"):
        check_job(target, job)
    check_apply_phases(target)
    for document in target.documents:
        key = (document.get("apiVersion"), document.get("kind"))
        if key == SERVICE_MONITOR:
            check_service_monitor(target, document)
        elif key == PROMETHEUS_RULE:
            check_prometheus_rule(target, document, alert_groups)
    if not target.of_kind("Deployment"):
        target.error(None, "renders no Deployment")


def run_checks(name, documents, kubernetes_version):
    target = Target(name, documents)
    alert_groups = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    sections, fields = config_field_names()
    try:
        check_target(target, kubernetes_version, alert_groups, sections, fields)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        # A document the schema check refused may not have the shape the later checks read.
        target.error(None, f"could not be checked further ({type(error).__name__}: {error})")
    return target.errors


# ---------------------------------------------------------------------------- self-test


def first(documents, kind):
    return next(document for document in documents if document.get("kind") == kind)


def server_container(documents):
    return first(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def set_toml_timeout(documents, milliseconds):
    config_map = first(documents, "ConfigMap")
    text = config_map["data"][CONFIG_FILE_NAME]
    config_map["data"][CONFIG_FILE_NAME] = re.sub(
        r"(?m)^timeout_ms = \d+", f"timeout_ms = {milliseconds}", text
    )


def drop_first_alert(documents):
    rule = next(d for d in documents if (d.get("apiVersion"), d.get("kind")) == PROMETHEUS_RULE)
    rule["spec"]["groups"][0]["rules"].pop(0)


# (what is broken, how, a piece of the error it must cause)
MUTATIONS = [
    (
        "privilege escalation allowed",
        lambda d: server_container(d)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation",
    ),
    (
        "writable root filesystem",
        lambda d: server_container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem",
    ),
    (
        "capabilities kept",
        lambda d: server_container(d)["securityContext"].pop("capabilities"),
        "drop ALL",
    ),
    (
        "root user",
        lambda d: first(d, "Job")["spec"]["template"]["spec"]["securityContext"].update(
            runAsNonRoot=False
        ),
        "runAsNonRoot",
    ),
    (
        "a misspelt field",
        lambda d: server_container(d)["livenessProbe"]["httpGet"].update(portt=8080),
        "invalid for Kubernetes",
    ),
    (
        "a wrong type",
        lambda d: first(d, "Deployment")["spec"].update(replicas="two"),
        "invalid for Kubernetes",
    ),
    (
        "a short grace period",
        lambda d: first(d, "Deployment")["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=30
        ),
        "terminationGracePeriodSeconds",
    ),
    (
        "a longer shutdown in bulwark.toml",
        lambda d: set_toml_timeout(d, 40000),
        "terminationGracePeriodSeconds",
    ),
    ("no preStop", lambda d: server_container(d).pop("lifecycle"), "preStop"),
    (
        "the latest tag",
        lambda d: server_container(d).update(image="registry.example.com/bulwark:latest"),
        "latest",
    ),
    (
        "an untagged image",
        lambda d: server_container(d).update(image="registry.example.com/bulwark"),
        "no tag",
    ),
    (
        "no memory limit",
        lambda d: server_container(d)["resources"]["limits"].pop("memory"),
        "resources",
    ),
    ("no readiness probe", lambda d: server_container(d).pop("readinessProbe"), "readinessProbe"),
    (
        "a rendered Secret",
        lambda d: d.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": SECRET_NAME,
                    "namespace": first(d, "Deployment")["metadata"].get("namespace"),
                },
                "stringData": {"metrics_key": "x"},
            }
        ),
        "a Secret is rendered",
    ),
    (
        "a database URL in the environment",
        lambda d: server_container(d)["env"].append(
            {"name": "DATABASE_URL", "value": "postgres://bulwark:hunter2@db/bulwark"}
        ),
        "URL with a password",
    ),
    ("a dropped alert", drop_first_alert, "alerts.yml"),
    (
        "the wrong metrics key",
        lambda d: next(x for x in d if x.get("kind") == "ServiceMonitor")["spec"]["endpoints"][0][
            "authorization"
        ]["credentials"].update(key="bootstrap_admin_key"),
        METRICS_KEY,
    ),
    (
        "a Service that selects nothing",
        lambda d: first(d, "Service")["spec"]["selector"].update(
            {"app.kubernetes.io/component": "web"}
        ),
        "no Service selects",
    ),
    (
        "a rollout that drops a node first",
        lambda d: first(d, "Deployment")["spec"]["strategy"]["rollingUpdate"].update(
            maxUnavailable=1
        ),
        "maxUnavailable 0",
    ),
    (
        "a migration from another release",
        lambda d: first(d, "Job")["spec"]["template"]["spec"]["containers"][0].update(
            image="registry.example.com/bulwark:0.0.9"
        ),
        "image differs",
    ),
    (
        "an unknown config key",
        lambda d: first(d, "ConfigMap")["data"].update(
            {
                CONFIG_FILE_NAME: first(d, "ConfigMap")["data"][CONFIG_FILE_NAME]
                + "\n[shutdown_]\ntimeout = 1\n"
            }
        ),
        "not a section",
    ),
    (
        "a ConfigMap applied with the server",
        lambda d: first(d, "ConfigMap")["metadata"]["labels"].update({COMPONENT_LABEL: "server"}),
        "would not apply it",
    ),
    (
        "a secret file the volume lacks",
        lambda d: server_container(d)["env"].append(
            {"name": "AMQP_URL_FILE", "value": "/run/secrets/bulwark/amqp"}
        ),
        "do not provide amqp",
    ),
]


def self_test(path, kubernetes_version):
    """Proves the checks catch what they are for: the rendered file passes, and each broken
    copy of it fails with the expected error. Returns the number of mutations not caught."""
    documents = load_documents(path)
    baseline = run_checks(f"{path} (unchanged)", documents, kubernetes_version)
    if baseline:
        print(
            "error: the self-test needs a file that passes; it has:\n  " + "\n  ".join(baseline),
            file=sys.stderr,
        )
        return 1
    num_missed = 0
    for what, mutate, expected in MUTATIONS:
        broken = copy.deepcopy(documents)
        mutate(broken)
        errors = run_checks(f"{path} with {what}", broken, kubernetes_version)
        if any(expected in error for error in errors):
            print(f"ok: {what} is refused")
        else:
            num_missed += 1
            print(
                f"error: {what} was not refused (expected an error containing {expected!r}); "
                f"errors: {errors}",
                file=sys.stderr,
            )
    print(f"self-test: {len(MUTATIONS) - num_missed} of {len(MUTATIONS)} broken copies refused")
    return num_missed


# ---------------------------------------------------------------------------- main


def extract_rules(path, out):
    """Writes the groups of the rendered PrometheusRule as a Prometheus rule file."""
    rules = [
        d for d in load_documents(path) if (d.get("apiVersion"), d.get("kind")) == PROMETHEUS_RULE
    ]
    if len(rules) != 1:
        print(
            f"error: {path} renders {len(rules)} PrometheusRule objects, expected 1",
            file=sys.stderr,
        )
        return 1
    with open(out, "w") as file:
        yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, file, sort_keys=False)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check")
    check.add_argument("files", nargs="+")
    test = commands.add_parser("self-test")
    test.add_argument("file")
    extract = commands.add_parser("extract-rules")
    extract.add_argument("file")
    extract.add_argument("out")
    for sub in (check, test):
        sub.add_argument("--kubernetes-version", default="1.30")
    args = parser.parse_args()

    if args.command == "extract-rules":
        return extract_rules(args.file, args.out)
    if args.command == "self-test":
        return 1 if self_test(args.file, args.kubernetes_version) else 0
    num_errors = 0
    for path in args.files:
        documents = load_documents(path)
        errors = run_checks(path, documents, args.kubernetes_version)
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        num_errors += len(errors)
        if not errors:
            kinds = sorted({document["kind"] for document in documents})
            print(
                f"ok: {path}: {len(documents)} objects ({', '.join(kinds)}) valid for Kubernetes "
                f"{args.kubernetes_version}"
            )
    return 1 if num_errors else 0


if __name__ == "__main__":
    sys.exit(main())
