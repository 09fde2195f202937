#!/usr/bin/env python3
"""Where a RabbitMQ job's time goes, step by step, from the JSON log of `bulwark-bench amqp`.

Run the bench with the step events at debug level, then read its log:

    BULWARK_LOG=warn,bulwark_broker::delivery=debug,bulwark_actors::attempt=debug,bulwark_bench=debug \\
        ./target/release/bulwark-bench amqp --jobs 1500 >report.json 2>bench.log
    python3 scripts/amqp-latency-breakdown.py bench.log
    python3 scripts/amqp-latency-breakdown.py --json bench.log   # the same, as JSON

Each job's steps are matched by the message id (the producer's events carry it as `id`, the
node's events inside the `delivery` span as `message_id`); times are the log lines' own
microsecond timestamps. Prints p50 / p90 / p99 per step and phase. Debug logging costs a little
CPU per step, so totals run slightly above the bench's own report.
"""
import collections
import datetime
import json
import sys

STEPS = [
    ("publishing job", "published"),
    ("processing delivery", "delivered"),
    ("created the message's job row, claimed", "row created"),
    ("job code returned", "executed"),
    ("job outcome recorded", "outcome committed"),
    ("outcome event received", "event received"),
    ("job outcome published", "event confirmed"),
    ("delivery settled", "acked"),
]
# A message whose row exists (redelivered, or published by the intake) gets it from the same
# statement; only when another node stored its key meanwhile is it looked up separately.
FOUND = ("found the message's job row", "row found")
LOOKED_UP = ("looked up the message's job row", "looked up")
# Celery's pipeline stamps a job finished just before its row's commit: the comparable point.
TOTALS = [("published", "executed"), ("published", "outcome committed"), ("published", "event received")]


def message_id(record):
    if record.get("message") in ("publishing job", "outcome event received"):
        return record.get("id")
    for span in record.get("spans", []):
        if span.get("message_id"):
            return span["message_id"]
    return record.get("message_id")


def micros(timestamp):
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1e6


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * (len(values) - 1)))]


def breakdown(path):
    """Returns {phase: {"jobs": n, "steps": {"a -> b": {"p50": .., "p90": .., "p99": ..}}}}."""
    names = dict(STEPS + [FOUND, LOOKED_UP])
    jobs = collections.defaultdict(dict)
    for line in open(path):
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        step = names.get(record.get("message"))
        key = message_id(record) if step else None
        if key:
            jobs[key].setdefault(step, micros(record["timestamp"]))
    # The bench names messages bench-<run id>-<phase>-<index>.
    phases = collections.defaultdict(list)
    for key, steps in jobs.items():
        parts = key.split("-", 2)
        if len(parts) == 3 and all(label in steps for _, label in STEPS):
            phases[parts[2].rsplit("-", 1)[0]].append(steps)
    if not phases:
        sys.exit(f"{path}: no job with every step; was the bench run with the debug targets above?")
    labels = [label for _, label in STEPS]
    result = {}
    for phase, steps_of_jobs in sorted(phases.items()):
        rows = {}
        for start, end in list(zip(labels, labels[1:])) + TOTALS:
            spans = [(steps[end] - steps[start]) / 1000 for steps in steps_of_jobs]
            rows[f"{start} -> {end}"] = {
                name: round(percentile(spans, fraction), 2)
                for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
            }
        result[phase] = {"jobs": len(steps_of_jobs), "steps": rows}
    result["found"] = sum(1 for steps in jobs.values() if FOUND[1] in steps)
    result["looked_up"] = sum(1 for steps in jobs.values() if LOOKED_UP[1] in steps)
    return result


def main(args):
    as_json = args[:1] == ["--json"]
    if as_json:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    result = breakdown(args[0])
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"messages whose row existed (returned by the same statement): {result.pop('found')}")
    print(f"messages whose row was looked up (another node stored it meanwhile): {result.pop('looked_up')}")
    totals = {f"{start} -> {end}" for start, end in TOTALS}
    for phase, report in result.items():
        print(f"phase {phase}: {report['jobs']} jobs (ms: p50 / p90 / p99)")
        for row, spans in report["steps"].items():
            start, end = row.split(" -> ")
            label = "  total" if row in totals else "       "
            print(f"{label} {start:>17} -> {end:<17} {spans['p50']:7.2f} {spans['p90']:7.2f} {spans['p99']:7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
