"""The parts of an onnxruntime-genai model folder's genai_config.json that the chat engine (apps/chat/genai.py)
needs."""
import json
import os


class GenaiConfig:
    """The parts of genai_config.json this engine needs."""

    def __init__(self, folder):
        with open(os.path.join(folder, "genai_config.json")) as f:
            raw = json.load(f)
        model = raw["model"]
        dec = model["decoder"]
        self.raw = raw
        self.type = model.get("type")
        self.filename = os.path.join(folder, dec["filename"])
        self.layers = int(dec["num_hidden_layers"])
        self.kv_heads = int(dec["num_key_value_heads"])
        self.head_size = int(dec["head_size"])
        self.context_length = int(model.get("context_length") or raw.get("search", {}).get("max_length") or 2048)
        self.vocab_size = int(model["vocab_size"])
        eos = model.get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        ins, outs = dec.get("inputs", {}), dec.get("outputs", {})
        self.input_ids = ins.get("input_ids", "input_ids")
        self.attention_mask = ins.get("attention_mask", "attention_mask")
        self.position_ids = ins.get("position_ids")
        self.past_key = ins.get("past_key_names", "past_key_values.%d.key")
        self.past_value = ins.get("past_value_names", "past_key_values.%d.value")
        self.logits = outs.get("logits", "logits")
        self.present_key = outs.get("present_key_names", "present.%d.key")
        self.present_value = outs.get("present_value_names", "present.%d.value")
        self.session_options = dec.get("session_options", {})
        search = raw.get("search", {})
        self.search = {"do_sample": bool(search.get("do_sample", False)),
                       "temperature": float(search.get("temperature", 1.0)),
                       "top_k": int(search.get("top_k", 0) or 0), "top_p": float(search.get("top_p", 1.0)),
                       "repetition_penalty": float(search.get("repetition_penalty", 1.0))}

    def bind_kv(self, binding, keys, values):
        """Bind each layer's KV buffers as both the past input and the present output (updated in place)."""
        for i in range(self.layers):
            binding.bind_ortvalue_input(self.past_key % i, keys[i])
            binding.bind_ortvalue_output(self.present_key % i, keys[i])
            binding.bind_ortvalue_input(self.past_value % i, values[i])
            binding.bind_ortvalue_output(self.present_value % i, values[i])
