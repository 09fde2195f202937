"""The Celery pipeline Bulwark's broker path is compared with: the same job built the usual
Celery way, on the same RabbitMQ, PostgreSQL, model and texts.

A `sentiment.analyze` task scores one or more texts with onnxruntime + HF tokenizers and commits
one result row per job to PostgreSQL. The queue is a durable quorum queue, tasks are acked late
(after the row is committed, as Bulwark acks) and published with confirms; there is no result
backend, the producer reads the rows.

  celery -A celery_pipeline worker --concurrency 2        (the worker; scripts/bench-celery.sh)
  python3 celery_pipeline.py --jobs N                     (the producer and the measurement)

The producer prints one JSON object: jobs/s for a backlog of 1-text jobs, latency from publish to
committed row at 145 jobs/s (half of the 290 texts/s the RabbitMQ issue gives for this machine)
and at half of the measured backlog rate, and CPU per job of the worker processes, of
PostgreSQL and of RabbitMQ, read from /proc.
"""

import argparse
import json
import os
import time
import uuid

from celery import Celery
from celery.signals import worker_process_init

from python_baseline import load_scorer

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
DATABASE_URL = os.environ.get("CELERY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bulwark_bench_amqp")
MODEL_DIR = os.environ.get("CELERY_MODEL_DIR", "ml-models/models/sentiment-minilm-sst2")
QUEUE = "bulwark-celery-bench"

app = Celery("celery_pipeline", broker=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_queue_type="quorum",
    worker_detect_quorum_queues=True,
    broker_transport_options={"confirm_publish": True},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS celery_results (
    job_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    result TEXT NOT NULL,
    published_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL
)
"""

_worker = {}


def _scorer():
    """Loads the model once per worker process (one intra-op thread, as Bulwark's workers)."""
    if not _worker:
        import psycopg

        probabilities_of = load_scorer(MODEL_DIR, threads=1)

        def score(texts):
            return [{"label": "positive" if row[1] >= row[0] else "negative", "score": float(row.max())} for row in probabilities_of(texts)]

        _worker["score"] = score
        _worker["db"] = psycopg.connect(DATABASE_URL)
    return _worker["score"], _worker["db"]


@worker_process_init.connect
def _load_model(**_kwargs):
    """Loads the model when a pool process starts, so the first jobs do not pay for it."""
    _scorer()


@app.task(name="sentiment.analyze")
def analyze(job_id, run_id, texts, published_at):
    score, db = _scorer()
    result = json.dumps({"results": score(texts)})
    with db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO celery_results (job_id, run_id, result, published_at, finished_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
            (job_id, run_id, result, published_at, time.time()),
        )
    db.commit()


def cpu_seconds(names=None, pids=None):
    """User + system CPU seconds of the processes named `names` or numbered `pids` (100 ticks/s)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                name = handle.read().strip()
            if not ((names and name in names) or (pids and int(entry) in pids)):
                continue
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / 100.0
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def worker_pids(main_pid):
    """The worker's main process and its pool children."""
    pids = {main_pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == main_pid:
                        pids.add(int(entry))
            except (FileNotFoundError, IndexError):
                continue
    return pids


def run_phase(db, num_jobs, pace, worker_pid):
    """Publishes `num_jobs` 1-text jobs (at `pace` jobs/s, or as fast as confirms allow) and
    waits for their rows; returns jobs/s, latency percentiles and CPU per job."""
    run_id = uuid.uuid4().hex
    pids = worker_pids(worker_pid)
    cpu_before = (cpu_seconds(pids=pids), cpu_seconds(names={"postgres"}), cpu_seconds(names={"beam.smp"}))
    started = time.time()
    for index in range(num_jobs):
        if pace:
            delay = started + index / pace - time.time()
            if delay > 0:
                time.sleep(delay)
        text = f"benchmark sentence {index}: the service was quick and pleasant"
        analyze.apply_async(args=(f"{run_id}-{index}", run_id, [text], time.time()))
    # A worker whose tasks fail writes no rows: give up once nothing has finished for 30 s.
    stalled_after = 30
    last_progress = (0, time.time())
    while True:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*), max(finished_at) FROM celery_results WHERE run_id = %s", (run_id,))
            done, last_finished = cursor.fetchone()
        db.commit()
        if done >= num_jobs:
            break
        if done > last_progress[0]:
            last_progress = (done, time.time())
        elif time.time() - last_progress[1] > stalled_after:
            raise SystemExit(f"only {done} of {num_jobs} celery jobs finished, none in the last {stalled_after} s: see the worker's log")
        time.sleep(0.05)
    seconds = last_finished - started
    cpu_after = (cpu_seconds(pids=pids), cpu_seconds(names={"postgres"}), cpu_seconds(names={"beam.smp"}))
    with db.cursor() as cursor:
        cursor.execute("SELECT (finished_at - published_at) * 1000 FROM celery_results WHERE run_id = %s ORDER BY 1", (run_id,))
        latencies = [row[0] for row in cursor.fetchall()]
    db.commit()
    per_job = lambda before, after: round((after - before) * 1000 / num_jobs, 3)
    return {
        "num_jobs": num_jobs,
        "offered_jobs_per_second": pace,
        "jobs_per_second": round(num_jobs / seconds, 1),
        "latency_p50_ms": round(latencies[len(latencies) // 2], 2),
        "latency_p99_ms": round(latencies[int((len(latencies) - 1) * 0.99)], 2),
        "worker_cpu_ms_per_job": per_job(cpu_before[0], cpu_after[0]),
        "database_cpu_ms_per_job": per_job(cpu_before[1], cpu_after[1]),
        "broker_cpu_ms_per_job": per_job(cpu_before[2], cpu_after[2]),
    }


def in_process_cpu_ms_per_text(num_texts=500):
    """CPU per 1-text call of the same scoring in this process: the model's share of a job."""
    score, _db = _scorer()
    score(["warm up"])
    started = time.process_time()
    for index in range(num_texts):
        score([f"benchmark sentence {index}: the service was quick and pleasant"])
    return (time.process_time() - started) * 1000 / num_texts


def main():
    import psycopg

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--worker-pid", type=int, required=True)
    args = parser.parse_args()
    db = psycopg.connect(DATABASE_URL)
    with db.cursor() as cursor:
        cursor.execute(SCHEMA)
    db.commit()
    backlog = run_phase(db, args.jobs, None, args.worker_pid)
    reference_half = run_phase(db, min(args.jobs, 1450), 145.0, args.worker_pid)
    own_half_rate = backlog["jobs_per_second"] / 2
    own_half = run_phase(db, min(args.jobs, int(own_half_rate * 10)), own_half_rate, args.worker_pid)
    model_cpu = in_process_cpu_ms_per_text()
    print(json.dumps({
        "pipeline": "celery",
        "backlog": backlog,
        "paced_at_145": reference_half,
        "paced_at_half": own_half,
        "in_process_cpu_ms_per_text": round(model_cpu, 3),
        "worker_cpu_ms_per_job_outside_model": round(backlog["worker_cpu_ms_per_job"] - model_cpu, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
