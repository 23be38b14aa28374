"""Chat templates: the model's own (tokenizer_config.json or chat_template.jinja), tools on templates without them."""
import json

import pytest

from foundry_inference.apps.chat.template import CHATML, ChatTemplate, TemplateError, load_template, tool_call_schema

pytestmark = pytest.mark.unit

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}]


def test_chatml_render_with_text_parts_and_developer_role():
    t = ChatTemplate(CHATML)
    out = t.render([{"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}])
    assert out == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_tools_prompt_is_added_to_the_system_message_when_the_template_ignores_tools():
    t = ChatTemplate(CHATML)
    out = t.render([{"role": "system", "content": "S"}, {"role": "user", "content": "weather?"}], TOOLS)
    assert out.startswith("<|im_start|>system\nS\n\nYou can call functions.")
    assert '"name": "get_weather"' in out
    out = t.render([{"role": "user", "content": "weather?"}], TOOLS)
    assert out.startswith("<|im_start|>system\nYou can call functions.")


def test_assistant_tool_calls_and_tool_results_are_written_as_text():
    t = ChatTemplate(CHATML)
    out = t.render([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}])
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in out
    assert "<|im_start|>tool\nsunny<|im_end|>" in out


def test_a_template_that_knows_tools_gets_them():
    source = "{% if tools %}TOOLS={{ tools | tojson }}{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}" \
             "{% endfor %}"
    out = ChatTemplate(source).render([{"role": "user", "content": "x"}], TOOLS)
    assert out.startswith("TOOLS=[{") and out.endswith("[user]x")


def test_raise_exception_is_a_400_error():
    t = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}")
    with pytest.raises(TemplateError, match="first must be user"):
        t.render([{"role": "system", "content": "x"}])


def test_sandbox_refuses_attribute_escapes():
    t = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(TemplateError):
        t.render([{"role": "user", "content": "x"}])


def test_load_template_sources(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    assert load_template(str(tmp_path)) == (CHATML, {"bos_token": "", "eos_token": "</s>", "pad_token": "",
                                                     "unk_token": ""})
    (tmp_path / "chat_template.jinja").write_text("J")
    assert load_template(str(tmp_path))[0] == "J"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert load_template(str(tmp_path))[0] == "D"


def test_tool_call_schema():
    one = tool_call_schema(TOOLS, "get_weather")
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"]["required"] == ["city"]
    two = tool_call_schema(TOOLS + [{"type": "function", "function": {"name": "other"}}])
    assert len(two["anyOf"]) == 2
