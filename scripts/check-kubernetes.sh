#!/usr/bin/env bash
# `make k8s-check`: the Kubernetes manifests of deploy/kubernetes/ render and are what we mean.
#   1. the PrometheusRule is what deploy/prometheus/alerts.yml renders to (not stale);
#   2. the base and every overlay render with `kubectl kustomize` (into target/kubernetes/);
#   3. scripts/check-kubernetes-manifests.py checks each render: built-in kinds against the
#      Kubernetes schemas bundled in kubernetes-validate (strict, offline), the Prometheus
#      Operator objects structurally, hardened pods, resources, probes, a grace period that
#      outlasts preStop + shutdown.timeout_ms (from the ConfigMap's bulwark.toml), pinned
#      images, no secret values, objects that point at each other;
#   4. promtool checks the rule groups of each rendered PrometheusRule;
#   5. self-test: broken copies of the production render must fail the same checker, one
#      mutation at a time in-process, and two end to end through its command line.
# Nothing is applied: no cluster is needed. kubectl comes from the machine (Debian package
# kubernetes-client when missing: its kustomize v2.0.3 reads these kustomizations too),
# promtool from the Debian package prometheus, the validator from PyPI (pinned in
# scripts/requirements-kubernetes.txt, installed into target/deploy-venv).
#
# Environment:
#   KUBECTL              the kubectl to render with (default: kubectl on PATH)
#   KUBERNETES_VERSION   the Kubernetes version to validate against (default 1.30: the oldest
#                        with the preStop sleep action the Deployment uses, on by default)
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL=${KUBECTL:-kubectl}
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.30}
VENV_DIR=target/deploy-venv
OUT_DIR=target/kubernetes
KUSTOMIZE_ROOT=deploy/kubernetes
. scripts/python-venv.sh

apt_install() {
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

if ! command -v "$KUBECTL" >/dev/null; then
    echo "kubectl ($KUBECTL) is missing: installing the Debian package kubernetes-client" >&2
    apt_install kubernetes-client || {
        echo "error: kubectl is missing and the Debian package kubernetes-client did not install; install kubectl >= 1.20 (any with kustomize) or set KUBECTL" >&2
        exit 1
    }
    KUBECTL=kubectl
fi
if ! command -v promtool >/dev/null; then
    echo "promtool is missing: installing the Debian package prometheus" >&2
    apt_install prometheus
fi
ensure_requirements_venv "$VENV_DIR" scripts/requirements-kubernetes.txt
PYTHON=$VENV_DIR/bin/python
CHECKER=scripts/check-kubernetes-manifests.py

"$PYTHON" scripts/render-prometheus-rule.py --check

rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
targets=("$KUSTOMIZE_ROOT/base")
for overlay in "$KUSTOMIZE_ROOT"/overlays/*/; do
    targets+=("${overlay%/}")
done
renders=()
for target in "${targets[@]}"; do
    render="$OUT_DIR/$(basename "$target").yaml"
    if ! "$KUBECTL" kustomize "$target" >"$render" 2>"$render.stderr"; then
        echo "error: kubectl kustomize $target failed:" >&2
        cat "$render.stderr" >&2
        exit 1
    fi
    # kustomize v5 warns that `bases` and `patchesStrategicMerge` are deprecated; they are
    # used on purpose (kustomize v2 knows no other names, overlays/production/kustomization.yaml).
    # Anything else it says fails the check.
    if grep -v -E "^# Warning: '(bases|patchesStrategicMerge)' is deprecated" "$render.stderr" >&2; then
        echo "error: kubectl kustomize $target printed the warnings above" >&2
        exit 1
    fi
    renders+=("$render")
done
echo "rendered ${#targets[@]} targets into $OUT_DIR with $("$KUBECTL" version --client 2>/dev/null | head -n 1)"

"$PYTHON" "$CHECKER" check --kubernetes-version "$KUBERNETES_VERSION" "${renders[@]}"

for render in "${renders[@]}"; do
    if grep -q '^kind: PrometheusRule$' "$render"; then
        rules="${render%.yaml}.rules.yml"
        "$PYTHON" "$CHECKER" extract-rules "$render" "$rules"
        promtool check rules "$rules"
    fi
done

# Self-test: the checker must refuse broken manifests, one mutation at a time (in-process),
production="$OUT_DIR/production.yaml"
"$PYTHON" "$CHECKER" self-test --kubernetes-version "$KUBERNETES_VERSION" "$production"
# then through its command line: a mutated copy of the production render must fail,
# naming the expected error.
expect_refused() {
    local what=$1 sed_script=$2 expected=$3
    local broken="$OUT_DIR/broken-${what// /-}.yaml"
    sed "$sed_script" "$production" >"$broken"
    if cmp -s "$production" "$broken"; then
        echo "error: self-test: the mutation for $what changed nothing" >&2
        exit 1
    fi
    if "$PYTHON" "$CHECKER" check --kubernetes-version "$KUBERNETES_VERSION" "$broken" >"$broken.out" 2>&1; then
        echo "error: self-test: a render with $what passed the check" >&2
        exit 1
    fi
    if ! grep -q -- "$expected" "$broken.out"; then
        echo "error: self-test: a render with $what failed, but not with an error naming $expected:" >&2
        cat "$broken.out" >&2
        exit 1
    fi
    echo "ok: a render with $what fails the check: $(grep -m1 -- "$expected" "$broken.out" | cut -c1-200)"
}
expect_refused "privilege escalation" \
    '0,/allowPrivilegeEscalation: false/s//allowPrivilegeEscalation: true/' 'allowPrivilegeEscalation must be false'
expect_refused "an unknown field" \
    '0,/^\( *\)terminationGracePeriodSeconds: /s//\1activeDeadlineSecond: 60\n&/' "'activeDeadlineSecond' was unexpected"
expect_refused "a short grace period" \
    's/terminationGracePeriodSeconds: [0-9]*/terminationGracePeriodSeconds: 30/' 'terminationGracePeriodSeconds 30 must be at least'
echo "kubernetes manifests: ${#renders[@]} renders valid and consistent; broken copies refused"
