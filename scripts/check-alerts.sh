#!/usr/bin/env bash
# `make alerts`: the alert rules parse (promtool check rules), behave as their unit tests say
# (promtool test rules: every alert firing and not firing), and each names a runbook that
# exists. promtool comes from the Debian package `prometheus`, installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null; then
    echo "promtool is missing: installing the Debian package prometheus" >&2
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)
missing=0
while read -r runbook; do
    if [ ! -f "$runbook" ]; then
        echo "error: an alert's runbook_url names $runbook, which does not exist" >&2
        missing=1
    fi
done < <(grep -o 'runbook_url: .*' deploy/prometheus/alerts.yml | awk '{print $2}' | sort -u)
num_alerts=$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)
num_runbooks=$(grep -c 'runbook_url:' deploy/prometheus/alerts.yml)
if [ "$num_alerts" != "$num_runbooks" ]; then
    echo "error: $num_alerts alerts but $num_runbooks runbook_url annotations" >&2
    missing=1
fi
exit "$missing"
