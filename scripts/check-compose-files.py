#!/usr/bin/env python3
"""The checker of scripts/check-deploy-compose.sh (`make compose-check`).

Checks, from a repository root (--root), that the container image and the compose stack are
what we mean, without Docker:

- every compose file, and every combination of them that a documented `docker compose ... up`
  command names (headers of the compose files, README.md, docs/deployment.md), against the
  compose specification's JSON schema (--schema), merged as compose merges them;
- in each combination, with its profiles on: dependencies defined and active, a restart
  policy and a healthcheck on every long-running service (or its `x-healthcheck-exempt`
  reason; one-shot services say `x-oneshot`), images pinned, no secret in plain text, every
  secret a service mounts or names under /run/secrets declared and written by
  compose/make-secrets.sh, bind-mount sources present, a stop grace above the node's
  shutdown deadline;
- compose/Dockerfile: --locked, a non-root numeric USER, a HEALTHCHECK, the wheel's pins equal
  to the Makefile's, the model checked against SHA256SUMS, paths equal to the container
  config's; compose/bulwark.container.toml: its keys exist in the config crate;
- deploy/: Prometheus scrapes the nodes with a mounted secret and loads the mounted rules,
  Alertmanager routes every severity alerts.yml uses, Grafana's provisioning matches the
  dashboard's data source variable, the collector's pipelines name declared components.

`--self-test` proves the checks can fail: each mutation of a temporary copy of the files must
produce the error it is meant to. Exit 1 when a check fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

COMPOSE_DIR = "compose"
BASE_COMPOSE = "compose/docker-compose.yml"
MERGED_COMPOSE = "compose/docker-compose*.yml (merged)"
DOCKERFILE = "compose/Dockerfile"
CONTAINER_CONFIG = "compose/bulwark.container.toml"
MAKE_SECRETS = "compose/make-secrets.sh"
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"
ALERT_RULES = "deploy/prometheus/alerts.yml"
ALERTMANAGER_CONFIG = "deploy/alertmanager/alertmanager.yml"
GRAFANA_DASHBOARD = "deploy/grafana/bulwark-overview.json"
GRAFANA_DATASOURCES = "deploy/grafana/provisioning/datasources"
GRAFANA_DASHBOARD_PROVIDERS = "deploy/grafana/provisioning/dashboards"
OTEL_CONFIG = "deploy/otel-collector/config.yaml"
DOCS_WITH_COMMANDS = ["README.md", "docs/deployment.md"]

# Environment variable names that hold a secret; a name ending in _FILE (or Grafana's __FILE)
# names a file instead, which is what we want.
SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)(API_?)?KEY($|_))", re.I
)
URL_NAME = re.compile(r"(URL|URI|DSN)$", re.I)
URL_WITH_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]+@", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
ASSIGNED_SECRET = re.compile(r"\b(password|passwd|pwd|secret|token|api[_-]?key)=\S", re.I)
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
VERSIONED_TAG = re.compile(r"\d+\.\d+")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")


@dataclass
class Report:
    """Collects the errors of one run; each names the file at fault."""

    errors: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


# --- reading ---------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, as compose does (PyYAML keeps the last)."""


def _construct_strict_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_strict_mapping)


def load_yaml(path: Path, report: Report, where: str) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=StrictLoader)
    except FileNotFoundError:
        report.error(where, "does not exist")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        report.error(where, f"is not valid YAML: {getattr(error, 'problem', None) or error}{line}")
    return None


def parse_duration_seconds(text: Any) -> float | None:
    """Returns a compose duration (`30s`, `1m30s`) in seconds, or None when it is not one."""
    if not isinstance(text, str):
        return None
    position, total = 0, 0.0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    for match in DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        position = match.end()
    return total if position == len(text) and position > 0 else None


# --- compose: merging, as `docker compose -f a -f b` does ------------------------------------

UNION_LISTS = {"ports", "expose", "secrets", "configs", "volumes", "tmpfs", "profiles",
               "cap_add", "cap_drop", "security_opt", "dns", "extra_hosts", "env_file"}
REPLACED = {"command", "entrypoint", "test"}


def normalize_service(service: dict) -> dict:
    service = copy.deepcopy(service)
    environment = service.get("environment")
    if isinstance(environment, list):
        service["environment"] = dict(
            item.split("=", 1) if "=" in item else (item, None) for item in environment
        )
    depends_on = service.get("depends_on")
    if isinstance(depends_on, list):
        service["depends_on"] = {name: {"condition": "service_started"} for name in depends_on}
    return service


def merge_values(base: Any, override: Any, key: str = "") -> Any:
    if key in REPLACED:
        return copy.deepcopy(override)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for name, value in override.items():
            merged[name] = merge_values(merged[name], value, name) if name in merged else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in UNION_LISTS:
        merged = copy.deepcopy(base)
        for item in override:
            if item not in merged:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(override)


def merge_compose(documents: list[dict]) -> dict:
    merged: dict = {}
    for document in documents:
        for section, value in document.items():
            if section == "services":
                services = merged.setdefault("services", {})
                for name, service in (value or {}).items():
                    service = normalize_service(service or {})
                    services[name] = merge_values(services[name], service) if name in services else service
            elif isinstance(value, dict) and isinstance(merged.get(section), dict):
                merged[section] = merge_values(merged[section], value)
            else:
                merged[section] = copy.deepcopy(value)
    return merged


# --- compose: the documented commands ----------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    files: tuple[str, ...]
    profiles: frozenset[str]
    source: str

    def label(self) -> str:
        profiles = "".join(f" --profile {name}" for name in sorted(self.profiles))
        return " ".join(f"-f {name}" for name in self.files) + profiles


def header_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def parse_compose_command(line: str, source: str) -> Combination | None:
    """Returns the files and profiles of a `docker compose ... up` line, or None."""
    start = line.find("docker compose")
    if start < 0:
        return None
    try:
        tokens = shlex.split(line[start:], comments=True)
    except ValueError:
        return None
    if "up" not in tokens:
        return None
    files, profiles = [], set()
    for index, token in enumerate(tokens):
        if token in ("-f", "--file") and index + 1 < len(tokens):
            files.append(tokens[index + 1])
        elif token == "--profile" and index + 1 < len(tokens):
            profiles.add(tokens[index + 1])
        elif token.startswith("--profile="):
            profiles.add(token.split("=", 1)[1])
    if not files:
        return None
    return Combination(tuple(files), frozenset(profiles), source)


def documented_combinations(root: Path, compose_files: list[str], report: Report) -> list[Combination]:
    combinations: dict[tuple, Combination] = {}
    for name in compose_files:
        lines = header_lines((root / name).read_text())
        own = [c for c in map(lambda line: parse_compose_command(line, name), lines) if c]
        if not any(name in combination.files for combination in own):
            report.error(name, f"its header comment gives no `docker compose -f ... -f {name} ... up` command")
        for combination in own:
            combinations.setdefault((combination.files, combination.profiles), combination)
    for doc in DOCS_WITH_COMMANDS:
        path = root / doc
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            combination = parse_compose_command(line, doc)
            if combination:
                combinations.setdefault((combination.files, combination.profiles), combination)
    return list(combinations.values())


# --- compose: the checks ---------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Returns (name, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last_slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > last_slash:
        return image[:colon], image[colon + 1:], digest
    return image, None, digest


def image_problem(image: str, built_images: set[str]) -> str | None:
    if "${" in image:
        return f"image {image!r} is interpolated: pin it in the file"
    name, tag, digest = split_image(image)
    if digest:
        return None
    if image in built_images:
        return None
    if tag is None:
        return f"image {image!r} has no tag (that is `latest`): pin a version"
    if tag == "latest":
        return f"image {image!r} uses `latest`: pin a version"
    if not VERSIONED_TAG.search(tag):
        return f"image {image!r} is not pinned to a minor or patch version (e.g. 15.10, v2.55.1) or a digest"
    return None


def walk_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def secret_targets(service: dict) -> dict[str, str]:
    """Returns the in-container path of each secret a service mounts, by path."""
    targets = {}
    for entry in service.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry.get("source")
        target = None if isinstance(entry, str) else entry.get("target")
        if not target:
            target = f"/run/secrets/{source}"
        elif not target.startswith("/"):
            target = f"/run/secrets/{target}"
        targets[target] = source
    return targets


def check_environment(where: str, service: dict, report: Report) -> None:
    mounted = secret_targets(service)
    for name, value in (service.get("environment") or {}).items():
        value_text = "" if value is None else str(value)
        if name.endswith("_FILE"):
            # DATABASE_URL_FILE, and Grafana's GF_..._PASSWORD__FILE: a path, which must be a secret
            if value_text not in mounted:
                report.error(where, f"{name}={value_text} names no secret this service mounts (declare it under `secrets:`)")
            continue
        if SECRET_NAME.search(name):
            report.error(where, f"{name} holds a secret in plain text: use {name}_FILE=/run/secrets/<name> and a compose secret")
        elif URL_NAME.search(name) and URL_WITH_USERINFO.search(value_text):
            report.error(where, f"{name} carries credentials in its URL: use {name}_FILE=/run/secrets/<name> and a compose secret")


def check_service_strings(where: str, service: dict, report: Report) -> None:
    mounted = secret_targets(service)
    for text in walk_strings(service):
        if URL_WITH_PASSWORD.search(text):
            report.error(where, f"a URL with a password is written in the file ({URL_WITH_PASSWORD.search(text).group(0)}...): use a secret")
        if ASSIGNED_SECRET.search(text):
            report.error(where, f"a secret is assigned in plain text ({ASSIGNED_SECRET.search(text).group(0)}...): use a secret")
        for path in re.findall(r"/run/secrets/[A-Za-z0-9._-]+", text):
            if path not in mounted:
                report.error(where, f"names {path}, which this service does not mount (add it to its `secrets:`)")


@dataclass
class ComposeFacts:
    """What the other checks need from the full compose project."""

    project: dict
    node_services: list[str]
    timeout_ms: int | None


def check_combination(root: Path, combination: Combination, documents: dict[str, dict],
                      schema_validator: Any, timeout_ms: int | None, report: Report) -> None:
    where = f"compose {combination.label()} ({combination.source})"
    missing = [name for name in combination.files if name not in documents]
    if missing:
        report.error(where, f"names {', '.join(missing)}, which is not a compose file that parses")
        return
    project = merge_compose([documents[name] for name in combination.files])
    for error in schema_validator.iter_errors(project):
        path = "/".join(str(part) for part in error.absolute_path) or "(top)"
        report.error(where, f"merged file fails the compose schema at {path}: {error.message}")
    services: dict = project.get("services") or {}
    declared_secrets: dict = project.get("secrets") or {}
    declared_volumes: dict = project.get("volumes") or {}
    built_images = {s["image"] for s in services.values() if s.get("build") and s.get("image")}
    active = {
        name for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & combination.profiles
    }
    known_profiles = {profile for service in services.values() for profile in service.get("profiles") or []}
    for profile in combination.profiles - known_profiles:
        report.error(where, f"--profile {profile}: no service has that profile")
    for name in sorted(active):
        service = services[name]
        service_where = f"{where}: service {name}"
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                report.error(service_where, f"depends on {dependency}, which is not defined")
            elif dependency not in active:
                profiles = ", ".join(services[dependency].get("profiles") or [])
                report.error(service_where, f"depends on {dependency}, which is inactive without --profile {profiles}")
        oneshot = service.get("x-oneshot")
        restart = str(service.get("restart", "no"))
        if oneshot:
            if restart.split(":")[0] not in ("no", "on-failure"):
                report.error(service_where, f"is one-shot (x-oneshot) but restart is {restart}")
        else:
            if restart.split(":")[0] not in RESTART_POLICIES:
                report.error(service_where, f"is long-running but has no restart policy (restart: {restart}); add `restart: unless-stopped`, or `x-oneshot: <why>` if it exits by design")
            healthcheck = service.get("healthcheck") or {}
            disabled = healthcheck.get("disable") or healthcheck.get("test") in (["NONE"], "NONE")
            exempt = service.get("x-healthcheck-exempt")
            if (not healthcheck.get("test") or disabled) and not (isinstance(exempt, str) and exempt.strip()):
                report.error(service_where, "is long-running but has no healthcheck; add one, or `x-healthcheck-exempt: <why>`")
        image = service.get("image")
        if not image:
            report.error(service_where, "has no image")
        else:
            problem = image_problem(str(image), built_images)
            if problem:
                report.error(service_where, problem)
        if service.get("env_file"):
            report.error(service_where, "uses env_file: secrets belong in compose secrets, settings in `environment:`")
        for entry in service.get("secrets") or []:
            source = entry if isinstance(entry, str) else entry.get("source")
            if source not in declared_secrets:
                report.error(service_where, f"mounts secret {source}, which is not declared under the top-level `secrets:`")
        check_environment(service_where, service, report)
        check_service_strings(service_where, service, report)
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if not source:
                continue
            if source.startswith((".", "/", "~")):
                if source.startswith(".") and not (root / COMPOSE_DIR / source).exists():
                    report.error(service_where, f"bind-mounts {source}, which does not exist (paths are relative to compose/)")
            elif source not in declared_volumes:
                report.error(service_where, f"mounts volume {source}, which is not declared under the top-level `volumes:`")
        if service.get("command") and list(service["command"])[:1] == ["serve"]:
            grace = parse_duration_seconds(service.get("stop_grace_period"))
            if grace is None:
                report.error(service_where, "runs `serve` but sets no stop_grace_period (Docker's 10 s would cut the shutdown short)")
            elif timeout_ms is not None and grace <= timeout_ms / 1000:
                report.error(service_where, f"stop_grace_period {service.get('stop_grace_period')} is not above the node's shutdown.timeout_ms {timeout_ms}: SIGKILL would cut running jobs short")
            mounts = [v.split(":")[1] for v in service.get("volumes") or [] if isinstance(v, str) and ":" in v]
            if "/var/lib/bulwark" not in mounts:
                report.error(service_where, "runs `serve` without a named volume at /var/lib/bulwark (its SQLite file and incidents)")
    for name, secret in declared_secrets.items():
        secret = secret or {}
        if secret.get("external"):
            report.error(f"{where}: secret {name}", "is external, which plain compose cannot mount: use `file: ./secrets/<name>`")
        elif not str(secret.get("file", "")).startswith("./secrets/"):
            report.error(f"{where}: secret {name}", "must be a file under ./secrets/ (compose/make-secrets.sh writes it there; git ignores it)")


def check_compose(root: Path, schema: dict, timeout_ms: int | None, report: Report) -> ComposeFacts | None:
    compose_files = sorted(
        str(path.relative_to(root)) for path in (root / COMPOSE_DIR).glob("docker-compose*.yml")
    )
    if BASE_COMPOSE not in compose_files:
        report.error(BASE_COMPOSE, "does not exist")
        return None
    validator = jsonschema.Draft201909Validator(schema)
    documents: dict[str, dict] = {}
    for name in compose_files:
        document = load_yaml(root / name, report, name)
        if not isinstance(document, dict):
            if document is not None:
                report.error(name, "is not a mapping")
            continue
        documents[name] = document
        for error in validator.iter_errors(document):
            path = "/".join(str(part) for part in error.absolute_path) or "(top)"
            report.error(name, f"fails the compose schema at {path}: {error.message}")
    if BASE_COMPOSE not in documents:
        return None
    combinations = [Combination((BASE_COMPOSE,), frozenset(), "the base file alone")]
    combinations += documented_combinations(root, compose_files, report)
    documented_files = {name for combination in combinations for name in combination.files}
    for name in compose_files:
        if name not in documented_files:
            report.error(name, "no documented `docker compose ... up` command uses it")
    for combination in combinations:
        check_combination(root, combination, documents, validator, timeout_ms, report)
    # every file at once, the base first: what the deploy/ configs are checked against
    in_order = [BASE_COMPOSE] + [name for name in compose_files if name != BASE_COMPOSE]
    every_file = merge_compose([documents[name] for name in in_order if name in documents])
    used_secrets = {
        entry if isinstance(entry, str) else entry.get("source")
        for service in (every_file.get("services") or {}).values()
        for entry in service.get("secrets") or []
    }
    make_secrets = (root / MAKE_SECRETS).read_text() if (root / MAKE_SECRETS).exists() else ""
    if not make_secrets:
        report.error(MAKE_SECRETS, "does not exist")
    for name, secret in (every_file.get("secrets") or {}).items():
        if name not in used_secrets:
            report.error(BASE_COMPOSE, f"secret {name} is declared but no service mounts it")
        file_name = Path(str((secret or {}).get("file", ""))).name
        if make_secrets and file_name and file_name not in make_secrets:
            report.error(MAKE_SECRETS, f"does not write {file_name}, the file of secret {name}")
    services = every_file.get("services") or {}
    node_services = sorted(
        name for name, service in services.items()
        if list(service.get("command") or [])[:1] == ["serve"]
    )
    if not node_services:
        report.error(BASE_COMPOSE, "no service runs `serve`")
    return ComposeFacts(every_file, node_services, timeout_ms)


def check_ignore_files(root: Path, report: Report) -> None:
    dockerignore = root / ".dockerignore"
    patterns = {
        line.strip().rstrip("/") for line in dockerignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    } if dockerignore.exists() else set()
    for required in ("compose/secrets", "target", ".git"):
        if required not in patterns:
            report.error(".dockerignore", f"does not exclude {required}/ from the build context")
    gitignore = (root / ".gitignore").read_text() if (root / ".gitignore").exists() else ""
    if not re.search(r"^/?compose/secrets(/\*?)?$", gitignore, re.M):
        report.error(".gitignore", "does not ignore compose/secrets/")


# --- Dockerfile and the container config -------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Returns (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def makefile_variable(makefile: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:?=\s*(.+)$", makefile, re.M)
    return match.group(1).strip() if match else None


def check_dockerfile(root: Path, container_config: dict | None, report: Report) -> None:
    path = root / DOCKERFILE
    if not path.exists():
        report.error(DOCKERFILE, "does not exist")
        return
    instructions = dockerfile_instructions(path.read_text())
    froms = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    if not froms:
        report.error(DOCKERFILE, "has no FROM")
        return
    final_stage = instructions[froms[-1]:]
    args = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            args[name.strip()] = value.strip()
    for index in froms:
        image = instructions[index][1].split()[0]
        resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        _, tag, digest = split_image(resolved)
        if not digest and (tag is None or tag == "latest"):
            report.error(DOCKERFILE, f"FROM {image} ({resolved}) is not pinned to a tag")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    if not re.search(r"cargo build\b[^&;]*--locked", runs):
        report.error(DOCKERFILE, "cargo build without --locked: the image must build the versions in Cargo.lock")
    if not re.search(r"cargo build\b[^&;]*--release", runs):
        report.error(DOCKERFILE, "cargo build without --release")
    users = [arguments for keyword, arguments in final_stage if keyword == "USER"]
    if not users:
        report.error(DOCKERFILE, "the final stage has no USER: the image would run as root")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit() or user == "0":
            report.error(DOCKERFILE, f"the final stage's USER {users[-1]} must be a non-root numeric uid (Kubernetes' runAsNonRoot needs one)")
    healthchecks = [arguments for keyword, arguments in final_stage if keyword == "HEALTHCHECK"]
    if not healthchecks or healthchecks[-1].upper().startswith("NONE"):
        report.error(DOCKERFILE, "the final stage has no HEALTHCHECK")
    elif "/live" not in healthchecks[-1]:
        report.error(DOCKERFILE, "the HEALTHCHECK does not probe /live")
    makefile = (root / "Makefile").read_text() if (root / "Makefile").exists() else ""
    for name in ("ORT_VERSION", "ORT_WHEEL_SHA256"):
        expected = makefile_variable(makefile, name)
        if expected is None:
            report.error("Makefile", f"defines no {name}")
        elif args.get(name) != expected:
            report.error(DOCKERFILE, f"ARG {name}={args.get(name)} differs from the Makefile's {name} := {expected}")
    wheel = makefile_variable(makefile, "ORT_WHEEL")
    if wheel and args.get("ORT_VERSION"):
        wheel = wheel.replace("$(ORT_VERSION)", args["ORT_VERSION"])
        if args.get("ORT_WHEEL") != wheel:
            report.error(DOCKERFILE, f"ARG ORT_WHEEL={args.get('ORT_WHEEL')} differs from the Makefile's wheel {wheel}")
    if not re.search(r"ORT_WHEEL_SHA256\}?\s+\S*ORT_WHEEL\}?\"?\s*\|\s*sha256sum --check", runs):
        report.error(DOCKERFILE, "the wheel is not checked against ORT_WHEEL_SHA256 with sha256sum --check")
    if not re.search(r"sha256sum --check[^&;]*SHA256SUMS", runs):
        report.error(DOCKERFILE, "the model is not checked against its SHA256SUMS")
    copies = [arguments for keyword, arguments in final_stage if keyword == "COPY"]
    destinations = {arguments.split()[-1] for arguments in copies}
    if not any(CONTAINER_CONFIG in arguments and arguments.split()[-1] == "/etc/bulwark/bulwark.toml" for arguments in copies):
        report.error(DOCKERFILE, f"does not install {CONTAINER_CONFIG} as /etc/bulwark/bulwark.toml")
    environment = " ".join(arguments for keyword, arguments in final_stage if keyword == "ENV")
    if not re.search(r"BULWARK_CONFIG=/etc/bulwark/bulwark\.toml", environment):
        report.error(DOCKERFILE, "sets no ENV BULWARK_CONFIG=/etc/bulwark/bulwark.toml (every bulwark command's --config)")
    if not any(keyword == "VOLUME" and "/var/lib/bulwark" in arguments for keyword, arguments in final_stage):
        report.error(DOCKERFILE, "declares no VOLUME /var/lib/bulwark")
    if container_config is not None:
        sentiment = container_config.get("sentiment", {})
        for key in ("model_dir", "runtime_path"):
            value = str(sentiment.get(key, ""))
            if not any(value.rstrip("/") == destination.rstrip("/") for destination in destinations):
                report.error(DOCKERFILE, f"copies nothing to sentiment.{key} = {value!r} of {CONTAINER_CONFIG}")


def check_container_config(root: Path, report: Report) -> dict | None:
    path = root / CONTAINER_CONFIG
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        report.error(CONTAINER_CONFIG, "does not exist")
        return None
    except tomllib.TOMLDecodeError as error:
        report.error(CONTAINER_CONFIG, f"is not valid TOML: {error}")
        return None
    expectations = [
        (("http", "addr"), lambda v: isinstance(v, str) and v.startswith("0.0.0.0:"), "must bind 0.0.0.0 (every interface of the container)"),
        (("telemetry", "log_format"), lambda v: v == "json", "must be json"),
        (("incidents", "dir"), lambda v: isinstance(v, str) and v.startswith("/var/lib/bulwark/"), "must be under the volume /var/lib/bulwark"),
        (("shutdown", "timeout_ms"), lambda v: isinstance(v, int) and v > 0, "must be set"),
    ]
    for keys, test, message in expectations:
        value = config.get(keys[0], {}).get(keys[1])
        if not test(value):
            report.error(CONTAINER_CONFIG, f"{'.'.join(keys)} = {value!r} {message}")
    source_dir = root / "config" / "src"
    if source_dir.is_dir():
        source = "\n".join(path.read_text() for path in source_dir.glob("*.rs"))
        for section, values in config.items():
            if not isinstance(values, dict):
                continue
            for key in values:
                if not re.search(rf"\bpub {re.escape(key)}\s*:", source):
                    report.error(CONTAINER_CONFIG, f"[{section}] {key} is not a field of the config crate (config/src): a typo stops the node")
    return config


# --- deploy/: Prometheus, Alertmanager, Grafana, the collector ------------------------------


def service_mounts(service: dict) -> dict[str, str]:
    """Returns the bind mounts of a service: container path -> host path (relative to compose/)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str) and volume.startswith("."):
            parts = volume.split(":")
            mounts[parts[1]] = parts[0]
    return mounts


def host_of(target: str) -> tuple[str, int | None]:
    target = re.sub(r"^[a-z]+://", "", target).split("/")[0]
    host, _, port = target.partition(":")
    return host, int(port) if port.isdigit() else None


def check_prometheus(root: Path, facts: ComposeFacts, report: Report) -> None:
    config = load_yaml(root / PROMETHEUS_CONFIG, report, PROMETHEUS_CONFIG)
    if not isinstance(config, dict):
        return
    services = facts.project.get("services") or {}
    prometheus = services.get("prometheus")
    if prometheus is None:
        report.error(BASE_COMPOSE, "has no prometheus service")
        return
    mounts = service_mounts(prometheus)
    config_dir = "/etc/prometheus"
    if mounts.get(f"{config_dir}/prometheus.yml") != f"../{PROMETHEUS_CONFIG}":
        report.error(BASE_COMPOSE, f"the prometheus service does not mount ../{PROMETHEUS_CONFIG} at {config_dir}/prometheus.yml")
    for rule_file in config.get("rule_files") or []:
        container_path = rule_file if rule_file.startswith("/") else f"{config_dir}/{rule_file}"
        host_path = mounts.get(container_path)
        if host_path is None:
            report.error(PROMETHEUS_CONFIG, f"rule file {rule_file} is not mounted into the prometheus service at {container_path}")
        elif not (root / COMPOSE_DIR / host_path).exists():
            report.error(BASE_COMPOSE, f"the prometheus service mounts {host_path}, which does not exist")
    jobs = {job.get("job_name"): job for job in config.get("scrape_configs") or []}
    job = jobs.get("bulwark")
    if job is None:
        report.error(PROMETHEUS_CONFIG, "has no scrape job `bulwark` (alerts.yml and the dashboard filter on job=\"bulwark\")")
    else:
        targets = [t for static in job.get("static_configs") or [] for t in static.get("targets") or []]
        hosts = sorted(host_of(target)[0] for target in targets)
        if hosts != facts.node_services:
            report.error(PROMETHEUS_CONFIG, f"job bulwark scrapes {hosts}, the compose nodes are {facts.node_services}")
        for target in targets:
            if host_of(target)[1] != 8080:
                report.error(PROMETHEUS_CONFIG, f"target {target} is not the nodes' port 8080")
        credentials = ((job.get("authorization") or {}).get("credentials_file")) or ""
        mounted = secret_targets(prometheus)
        if not credentials:
            report.error(PROMETHEUS_CONFIG, "job bulwark sends no key (authorization.credentials_file): /metrics needs a `read` key")
        elif credentials not in mounted:
            report.error(PROMETHEUS_CONFIG, f"credentials_file {credentials} is not a secret mounted into the prometheus service")
    for alertmanager in (config.get("alerting") or {}).get("alertmanagers") or []:
        for static in alertmanager.get("static_configs") or []:
            for target in static.get("targets") or []:
                if host_of(target)[0] not in services:
                    report.error(PROMETHEUS_CONFIG, f"alertmanager target {target} is not a compose service")


def check_alertmanager(root: Path, report: Report) -> None:
    config = load_yaml(root / ALERTMANAGER_CONFIG, report, ALERTMANAGER_CONFIG)
    rules = load_yaml(root / ALERT_RULES, report, ALERT_RULES)
    if not isinstance(config, dict) or not isinstance(rules, dict):
        return
    receivers = {receiver.get("name") for receiver in config.get("receivers") or []}
    route = config.get("route") or {}
    routed: set[str] = set()

    def visit(node: dict) -> None:
        if node.get("receiver") and node["receiver"] not in receivers:
            report.error(ALERTMANAGER_CONFIG, f"a route names receiver {node['receiver']}, which is not declared")
        for matcher in node.get("matchers") or []:
            match = re.fullmatch(r'\s*severity\s*=\s*"?([^"]+)"?\s*', str(matcher))
            if match:
                routed.add(match.group(1))
        for child in node.get("routes") or []:
            visit(child)

    if not route.get("receiver"):
        report.error(ALERTMANAGER_CONFIG, "the root route has no default receiver")
    visit(route)
    severities = {
        str(rule.get("labels", {}).get("severity"))
        for group in rules.get("groups") or [] for rule in group.get("rules") or []
        if rule.get("alert")
    }
    for severity in sorted(severities - routed):
        report.error(ALERTMANAGER_CONFIG, f"no route for severity={severity}, which {ALERT_RULES} uses")


def check_grafana(root: Path, facts: ComposeFacts, report: Report) -> None:
    services = facts.project.get("services") or {}
    grafana = services.get("grafana")
    if grafana is None:
        report.error(BASE_COMPOSE, "has no grafana service")
        return
    mounts = service_mounts(grafana)
    datasources = []
    for path in sorted((root / GRAFANA_DATASOURCES).glob("*.y*ml")):
        document = load_yaml(path, report, str(path.relative_to(root))) or {}
        for datasource in document.get("datasources") or []:
            datasources.append(datasource)
            for key in ("name", "type", "uid", "url"):
                if not datasource.get(key):
                    report.error(str(path.relative_to(root)), f"a data source has no {key}")
            host = host_of(str(datasource.get("url", "")))[0]
            if host and host not in services:
                report.error(str(path.relative_to(root)), f"data source {datasource.get('name')} points at {host}, not a compose service")
    if not datasources:
        report.error(GRAFANA_DATASOURCES, "provisions no data source")
    if sum(1 for datasource in datasources if datasource.get("isDefault")) != 1:
        report.error(GRAFANA_DATASOURCES, "exactly one data source must be the default")
    types = {datasource.get("type") for datasource in datasources}
    uids = {datasource.get("uid") for datasource in datasources}
    for needed in ("prometheus", "jaeger"):
        if needed not in types:
            report.error(GRAFANA_DATASOURCES, f"provisions no {needed} data source")
    try:
        dashboard = json.loads((root / GRAFANA_DASHBOARD).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        report.error(GRAFANA_DASHBOARD, f"is not a readable JSON dashboard: {error}")
        return
    variables = {
        variable.get("name"): variable
        for variable in (dashboard.get("templating") or {}).get("list") or []
    }
    datasource_variables = {
        name for name, variable in variables.items() if variable.get("type") == "datasource"
    }
    for name in datasource_variables:
        wanted = variables[name].get("query")
        if wanted not in types:
            report.error(GRAFANA_DASHBOARD, f"variable ${name} wants a {wanted} data source; none is provisioned")

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            datasource = node.get("datasource")
            if isinstance(datasource, dict) and datasource.get("uid"):
                uid = datasource["uid"]
                variable = re.fullmatch(r"\$\{?(\w+)\}?", uid)
                if variable:
                    if variable.group(1) not in datasource_variables:
                        report.error(GRAFANA_DASHBOARD, f"a panel uses ${variable.group(1)}, which is no data source variable")
                elif uid not in uids and uid not in ("-- Grafana --", "grafana"):
                    report.error(GRAFANA_DASHBOARD, f"a panel names data source uid {uid!r}, which is not provisioned")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(dashboard)
    dashboard_target = next(
        (target for target, source in mounts.items() if source == f"../{GRAFANA_DASHBOARD}"), None
    )
    if dashboard_target is None:
        report.error(BASE_COMPOSE, f"the grafana service does not mount ../{GRAFANA_DASHBOARD}")
    provider_paths = []
    for path in sorted((root / GRAFANA_DASHBOARD_PROVIDERS).glob("*.y*ml")):
        document = load_yaml(path, report, str(path.relative_to(root))) or {}
        for provider in document.get("providers") or []:
            provider_paths.append(str((provider.get("options") or {}).get("path", "")).rstrip("/"))
    if dashboard_target and str(Path(dashboard_target).parent) not in provider_paths:
        report.error(GRAFANA_DASHBOARD_PROVIDERS, f"no provider reads {Path(dashboard_target).parent}, where compose mounts the dashboard")
    for provisioning in (GRAFANA_DATASOURCES, GRAFANA_DASHBOARD_PROVIDERS):
        if f"../{provisioning}" not in mounts.values():
            report.error(BASE_COMPOSE, f"the grafana service does not mount ../{provisioning}")


def check_otel_collector(root: Path, facts: ComposeFacts, report: Report) -> None:
    config = load_yaml(root / OTEL_CONFIG, report, OTEL_CONFIG)
    if not isinstance(config, dict):
        return
    services = facts.project.get("services") or {}
    pipelines = ((config.get("service") or {}).get("pipelines")) or {}
    if not pipelines:
        report.error(OTEL_CONFIG, "has no pipeline")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_name, pipeline in pipelines.items():
        if not (pipeline or {}).get("receivers") or not (pipeline or {}).get("exporters"):
            report.error(OTEL_CONFIG, f"pipeline {pipeline_name} needs receivers and exporters")
        for kind in used:
            for component in (pipeline or {}).get(kind) or []:
                used[kind].add(component)
                if component not in (config.get(kind) or {}):
                    report.error(OTEL_CONFIG, f"pipeline {pipeline_name} names {kind[:-1]} {component}, which is not declared under {kind}:")
    for kind, names in used.items():
        for declared in config.get(kind) or {}:
            if declared not in names:
                report.error(OTEL_CONFIG, f"{kind[:-1]} {declared} is declared but no pipeline uses it")
    for extension in (config.get("service") or {}).get("extensions") or []:
        if extension not in (config.get("extensions") or {}):
            report.error(OTEL_CONFIG, f"service.extensions names {extension}, which is not declared")
    for name, exporter in (config.get("exporters") or {}).items():
        endpoint = (exporter or {}).get("endpoint")
        if endpoint and host_of(str(endpoint))[0] not in services:
            report.error(OTEL_CONFIG, f"exporter {name} sends to {endpoint}, not a compose service")
    grpc = ((((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc") or {})
    grpc_port = host_of(str(grpc.get("endpoint", "")))[1]
    collector = services.get("otel-collector")
    if collector is None:
        report.error(BASE_COMPOSE, "has no otel-collector service")
        return
    mounts = service_mounts(collector)
    if f"../{OTEL_CONFIG}" not in mounts.values():
        report.error(BASE_COMPOSE, f"the otel-collector service does not mount ../{OTEL_CONFIG}")
    for name in facts.node_services:
        endpoint = ((services[name].get("environment") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        if endpoint is None:
            continue
        host, port = host_of(str(endpoint))
        if host != "otel-collector" or port != grpc_port:
            report.error(MERGED_COMPOSE, f"{name} exports traces to {endpoint}; the collector's OTLP gRPC receiver is otel-collector:{grpc_port}")
        if not str(endpoint).startswith("http://"):
            report.error(MERGED_COMPOSE, f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT must be http:// (the nodes export without TLS)")


# --- the whole check, and its self-test --------------------------------------------------------


def run_checks(root: Path, schema: dict) -> Report:
    report = Report()
    container_config = check_container_config(root, report)
    timeout_ms = (container_config or {}).get("shutdown", {}).get("timeout_ms")
    check_ignore_files(root, report)
    check_dockerfile(root, container_config, report)
    facts = check_compose(root, schema, timeout_ms, report)
    if facts is not None:
        check_prometheus(root, facts, report)
        check_grafana(root, facts, report)
        check_otel_collector(root, facts, report)
    check_alertmanager(root, report)
    return report


@dataclass
class Mutation:
    """One deliberate breakage of a copy of the files, and the error it must cause."""

    description: str
    path: str
    edit: Callable[[str], str]
    expected: str


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        if old not in text:
            raise AssertionError(f"self-test mutation is stale: {old!r} is not in the file")
        return text.replace(old, new, 1)
    return edit


MUTATIONS = [
    Mutation("an unknown service key", BASE_COMPOSE,
             replace_once("    stop_grace_period: 30s\n    logging: *logging\n\n  migrate:",
                          "    stop_grace_period: 30s\n    stop_grace: 30s\n    logging: *logging\n\n  migrate:"),
             "fails the compose schema"),
    Mutation("a wrong type", BASE_COMPOSE,
             replace_once("      retries: 20\n", "      retries: twenty\n"), "fails the compose schema"),
    Mutation("a duplicate key", BASE_COMPOSE,
             replace_once("    image: postgres:15.10-bookworm\n",
                          "    image: postgres:15.10-bookworm\n    image: postgres:15.10-bookworm\n"),
             "duplicate key"),
    Mutation("a password in plain text", BASE_COMPOSE,
             replace_once("      POSTGRES_USER: bulwark\n", "      POSTGRES_USER: bulwark\n      POSTGRES_PASSWORD: hunter2\n"),
             "POSTGRES_PASSWORD holds a secret in plain text"),
    Mutation("a URL with credentials", BASE_COMPOSE,
             replace_once("  DATABASE_URL_FILE: /run/secrets/database_url\n  BULWARK_BOOTSTRAP",
                          "  DATABASE_URL: postgres://bulwark:hunter2@postgres:5432/bulwark\n  BULWARK_BOOTSTRAP"),
             "DATABASE_URL carries credentials"),
    Mutation("a key in a command", BASE_COMPOSE,
             replace_once('"--latency-ms", "40"]', '"--latency-ms", "40", "token=abc"]'),
             "a secret is assigned in plain text"),
    Mutation("a _FILE variable without its secret", "compose/docker-compose.rabbitmq.yml",
             replace_once("  secrets:\n    - amqp_url\n", ""), "names no secret this service mounts"),
    Mutation("an undeclared secret", BASE_COMPOSE,
             replace_once("    secrets:\n      - grafana_admin_password\n",
                          "    secrets:\n      - grafana_admin_password\n      - grafana_smtp_password\n"),
             "mounts secret grafana_smtp_password, which is not declared"),
    Mutation("a secret that make-secrets.sh does not write", BASE_COMPOSE,
             replace_once("    file: ./secrets/grafana_admin_password\n", "    file: ./secrets/grafana_password\n"),
             "does not write grafana_password"),
    Mutation("no restart policy", BASE_COMPOSE,
             replace_once("    profiles: [\"monitoring\"]\n    restart: unless-stopped\n    command:\n      - --config.file=/etc/alertmanager",
                          "    profiles: [\"monitoring\"]\n    command:\n      - --config.file=/etc/alertmanager"),
             "has no restart policy"),
    Mutation("no healthcheck", BASE_COMPOSE,
             replace_once("      test: [\"CMD\", \"wget\", \"-q\", \"--spider\", \"http://127.0.0.1:14269/\"]\n      interval: 10s\n      timeout: 3s\n      retries: 5\n",
                          "      disable: true\n"),
             "service jaeger: is long-running but has no healthcheck"),
    Mutation("an image on latest", BASE_COMPOSE,
             replace_once("image: prom/alertmanager:v0.27.0", "image: prom/alertmanager:latest"), "uses `latest`"),
    Mutation("an image on a major tag", BASE_COMPOSE,
             replace_once("image: postgres:15.10-bookworm", "image: postgres:15"), "is not pinned"),
    Mutation("a node depending on a profile service", BASE_COMPOSE,
             replace_once("    migrate:\n      condition: service_completed_successfully\n",
                          "    migrate:\n      condition: service_completed_successfully\n    rabbitmq:\n      condition: service_healthy\n"),
             "which is inactive without --profile rabbitmq"),
    Mutation("a documented command without its profile", "compose/docker-compose.rabbitmq.yml",
             replace_once("-f compose/docker-compose.rabbitmq.yml --profile rabbitmq up", "-f compose/docker-compose.rabbitmq.yml up"),
             "which is inactive without --profile rabbitmq"),
    Mutation("a short stop grace period", BASE_COMPOSE,
             replace_once("  stop_grace_period: 30s\n  depends_on:", "  stop_grace_period: 20s\n  depends_on:"),
             "is not above the node's shutdown.timeout_ms"),
    Mutation("a missing bind-mount source", BASE_COMPOSE,
             replace_once("../deploy/otel-collector/config.yaml:", "../deploy/otel-collector/collector.yaml:"),
             "which does not exist"),
    Mutation("the secrets in the build context", ".dockerignore",
             replace_once("compose/secrets/\n", ""), "does not exclude compose/secrets/"),
    Mutation("a build without --locked", DOCKERFILE,
             replace_once("cargo build --release --locked --bin bulwark", "cargo build --release --bin bulwark"),
             "without --locked"),
    Mutation("an image running as root", DOCKERFILE,
             replace_once("USER 10001:10001", "USER root"), "must be a non-root numeric uid"),
    Mutation("no HEALTHCHECK", DOCKERFILE,
             replace_once("HEALTHCHECK --interval", "# HEALTHCHECK --interval"), "has no HEALTHCHECK"),
    Mutation("a wheel sha256 other than the Makefile's", DOCKERFILE,
             replace_once("ARG ORT_WHEEL_SHA256=5752", "ARG ORT_WHEEL_SHA256=0752"), "differs from the Makefile's ORT_WHEEL_SHA256"),
    Mutation("a model path the image does not have", CONTAINER_CONFIG,
             replace_once('model_dir = "/opt/bulwark/models/sentiment-minilm-sst2"', 'model_dir = "/opt/bulwark/model"'),
             "copies nothing to sentiment.model_dir"),
    Mutation("a config key that does not exist", CONTAINER_CONFIG,
             replace_once("max_attempts = 5\n", "max_atempts = 5\n"), "[jobs] max_atempts is not a field"),
    Mutation("Prometheus without the read key", PROMETHEUS_CONFIG,
             replace_once("credentials_file: /run/secrets/prometheus_read_key", "credentials_file: /run/secrets/bulwark_admin_key"),
             "is not a secret mounted into the prometheus service"),
    Mutation("Prometheus scraping a node that does not exist", PROMETHEUS_CONFIG,
             replace_once('"node-b:8080"', '"node-c:8080"'), "the compose nodes are"),
    Mutation("a severity without a route", ALERTMANAGER_CONFIG,
             replace_once('        - severity="ticket"\n', '        - severity="low"\n'), "no route for severity=ticket"),
    Mutation("a dashboard data source that is not provisioned", GRAFANA_DATASOURCES + "/bulwark.yaml",
             replace_once("    type: prometheus\n", "    type: loki\n"), "wants a prometheus data source"),
    Mutation("a collector pipeline naming an undeclared exporter", OTEL_CONFIG,
             replace_once("exporters: [otlp/jaeger]", "exporters: [otlp/jaeger, otlp/zipkin]"),
             "names exporter otlp/zipkin, which is not declared"),
    Mutation("nodes exporting to the wrong port", "compose/docker-compose.monitoring.yml",
             replace_once("http://otel-collector:4317", "http://otel-collector:4318"),
             "the collector's OTLP gRPC receiver is otel-collector:4317"),
]

COPIED = [".dockerignore", ".gitignore", "Makefile", "README.md", "docs/deployment.md", "compose",
          "deploy/prometheus", "deploy/alertmanager", "deploy/grafana", "deploy/otel-collector", "config/src"]


def copy_tree(root: Path, destination: Path) -> None:
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("secrets"))
        elif source.exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def self_test(root: Path, schema: dict) -> int:
    """Returns 0 when every mutation is caught with its error, 1 otherwise."""
    failures = 0
    with tempfile.TemporaryDirectory(prefix="compose-check-") as scratch:
        pristine = Path(scratch) / "pristine"
        copy_tree(root, pristine)
        baseline = run_checks(pristine, schema)
        if baseline.errors:
            print("self-test: the unmodified copy already fails:", *baseline.errors, sep="\n  ")
            return 1
        for number, mutation in enumerate(MUTATIONS):
            work = Path(scratch) / f"mutation-{number}"
            shutil.copytree(pristine, work)
            target = work / mutation.path
            try:
                target.write_text(mutation.edit(target.read_text()))
            except AssertionError as error:
                print(f"self-test FAILED ({mutation.description}): {error}")
                failures += 1
                continue
            report = run_checks(work, schema)
            caught = [error for error in report.errors if mutation.expected in error]
            if caught:
                print(f"self-test ok: {mutation.description} -> {caught[0]}")
            else:
                failures += 1
                print(f"self-test FAILED: {mutation.description} was not caught (wanted {mutation.expected!r});"
                      f" errors: {report.errors or 'none'}")
    print(f"self-test: {len(MUTATIONS) - failures} of {len(MUTATIONS)} deliberate breakages caught")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the repository root")
    parser.add_argument("--schema", type=Path, required=True, help="compose-spec.json")
    parser.add_argument("--self-test", action="store_true", help="prove the checks fail on broken copies")
    args = parser.parse_args()
    schema = json.loads(args.schema.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    if args.self_test:
        return self_test(args.root, schema)
    report = run_checks(args.root, schema)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    if report.errors:
        print(f"compose check: {len(report.errors)} problem(s)", file=sys.stderr)
        return 1
    print("compose check: compose files, Dockerfile, container config and deploy/ configs are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
