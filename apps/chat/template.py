"""The model's chat template (from its tokenizer config), rendered with a sandboxed Jinja environment the way
Hugging Face transformers renders it, and the glue for tools on models whose template knows nothing about them.

Messages reach the template as {"role", "content": str} (text parts joined; `developer` becomes `system`); an
assistant turn with tool_calls and a tool result are written in the `<tool_call>` convention the tools prompt
teaches, unless the template handles `tool_calls` itself.
"""
import json
import os
from datetime import datetime

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TOOLS_PROMPT = (
    "You can call functions. To call one, answer with nothing but\n"
    "<tool_call>{{\"name\": <function name>, \"arguments\": <JSON object of arguments>}}</tool_call>\n"
    "Available functions (JSON schema of the arguments):\n{functions}"
)


class TemplateError(ValueError):
    """The messages cannot be rendered (the template raised): answered 400."""


def load_template(folder):
    """(template source, special tokens) from tokenizer_config.json's chat_template or chat_template.jinja."""
    config = {}
    path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    source = config.get("chat_template")
    if isinstance(source, list):              # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {item.get("name"): item.get("template") for item in source if isinstance(item, dict)}
        source = named.get("default") or next(iter(named.values()), None)
    jinja_file = os.path.join(folder, "chat_template.jinja")
    if not source and os.path.exists(jinja_file):
        with open(jinja_file, encoding="utf-8") as f:
            source = f.read()
    specials = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        specials[key] = value or ""
    return source or CHATML, specials


class ChatTemplate:
    def __init__(self, source, specials=None):
        from jinja2.exceptions import TemplateError as JinjaTemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._jinja_error = JinjaTemplateError
        self.source = source
        self.template = env.from_string(source)
        self.specials = specials or {}
        self.handles_tools = "tools" in source
        self.handles_tool_calls = "tool_calls" in source

    def render(self, messages, tools=None, add_generation_prompt=True):
        """`messages`: validated OpenAI messages; `tools`: the request's tools (OpenAI shape) or None."""
        msgs = [self._message(m) for m in messages]
        if tools and not self.handles_tools:
            msgs = _with_tools_prompt(msgs, tools)
        variables = dict(self.specials, messages=msgs, add_generation_prompt=add_generation_prompt)
        if tools and self.handles_tools:
            variables["tools"] = tools
        try:
            return self.template.render(**variables)
        except TemplateError:
            raise
        except (self._jinja_error, TypeError, KeyError, IndexError, ValueError) as exc:
            raise TemplateError(f"The model's chat template cannot render these messages: {exc}") from None

    def _message(self, message):
        role = message["role"]
        if role == "developer":
            role = "system"
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        content = content or ""
        out = {"role": role, "content": content}
        if message.get("name"):
            out["name"] = message["name"]
        calls = message.get("tool_calls")
        if calls:
            if self.handles_tool_calls:
                out["tool_calls"] = calls
            else:
                rendered = "".join(
                    "<tool_call>" + json.dumps({"name": c["function"]["name"],
                                                "arguments": _arguments(c["function"].get("arguments"))},
                                               ensure_ascii=False) + "</tool_call>" for c in calls)
                out["content"] = (content + "\n" if content else "") + rendered
        if role == "tool" and message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        return out


def _arguments(raw):
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def _with_tools_prompt(messages, tools):
    functions = "\n".join(json.dumps({"name": t["function"]["name"],
                                      "description": t["function"].get("description", ""),
                                      "parameters": t["function"].get("parameters", {"type": "object"})},
                                     ensure_ascii=False) for t in tools)
    prompt = TOOLS_PROMPT.format(functions=functions)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=messages[0]["content"] + "\n\n" + prompt)
        return [first] + messages[1:]
    return [{"role": "system", "content": prompt}] + messages


def tool_call_schema(tools, name=None):
    """A JSON schema for one call `{"name", "arguments"}` of the named tool, or of any of `tools`."""
    def one(tool):
        fn = tool["function"]
        params = fn.get("parameters") or {"type": "object"}
        return {"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"], "additionalProperties": False}
    chosen = [t for t in tools if name is None or t["function"]["name"] == name]
    schema = one(chosen[0]) if len(chosen) == 1 else {"anyOf": [one(t) for t in chosen]}
    schema["x-guidance"] = {"whitespace_flexible": False}
    return schema
