"""The Python baseline Bulwark's sentiment path is compared with: onnxruntime + HF tokenizers
on the same model and the same texts, tokenization included, no HTTP.

  python3 scripts/python_baseline.py --model-dir DIR --data FILE [--batch 32] [--threads 2]
      [--processes 1] [--seconds 15]

Prints one JSON line: sentences/s over the whole run and per-batch latency percentiles.
With --processes N, N independent processes share the texts and their rates are summed.
"""

import argparse
import json
import multiprocessing
import time


def load_texts(path):
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                texts.append(line.split(" ", 1)[1])
    return texts


def load_scorer(model_dir, threads):
    """Returns a function that scores a list of texts: tokenization, the ONNX session and a
    softmax, as one Python caller of the model would (also used by celery_pipeline.py)."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")

    def score(texts):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return score


def run(args, texts, result_queue):
    score = load_scorer(args.model_dir, args.threads)
    done = 0
    latencies = []
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < args.seconds:
        batch = [texts[(index + offset) % len(texts)] for offset in range(args.batch)]
        index += args.batch
        batch_started = time.perf_counter()
        score(batch)
        latencies.append(time.perf_counter() - batch_started)
        done += len(batch)
    elapsed = time.perf_counter() - started
    result_queue.put((done, elapsed, latencies))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    texts = load_texts(args.data)
    result_queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=run, args=(args, texts[offset::args.processes], result_queue))
        for offset in range(args.processes)
    ]
    for worker in workers:
        worker.start()
    results = [result_queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(latency for _, _, batch_latencies in results for latency in batch_latencies)
    rate = sum(done / elapsed for done, elapsed, _ in results)
    percentile = lambda fraction: latencies[int((len(latencies) - 1) * fraction)] * 1000
    print(json.dumps({
        "baseline": "python onnxruntime + tokenizers",
        "batch": args.batch,
        "threads_per_process": args.threads,
        "processes": args.processes,
        "sentences_per_second": round(rate, 1),
        "batch_latency_p50_ms": round(percentile(0.5), 2),
        "batch_latency_p99_ms": round(percentile(0.99), 2),
    }))


if __name__ == "__main__":
    main()
