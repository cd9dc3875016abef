"""The official openai and anthropic SDKs through Keel to a Gemini deployment.

Usage: gemini_gateway_sdk.py KEEL_URL. Keel's route `gemini` is served by a
`kind = "gemini"` deployment (keel chaos speaking Gemini); set up by
tests/gemini.rs. Prints one line per check; exits non-zero on any failure.
"""
import json
import sys
import traceback

import anthropic
import openai

KEEL = sys.argv[1]
failures = []
oa = openai.OpenAI(base_url=f"{KEEL}/v1", api_key="unused", max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=KEEL, api_key="unused", max_retries=0, timeout=20)
MSG = [{"role": "user", "content": "Tell me a story."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def check(name):
    def wrap(fn):
        try:
            fn()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001
            failures.append(name)
            print(f"FAIL {name}\n{traceback.format_exc()}")
        return fn
    return wrap


@check("openai: plain")
def _():
    r = oa.chat.completions.create(model="gemini", messages=MSG)
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


@check("openai: stream equals plain")
def _():
    plain = oa.chat.completions.create(model="gemini", messages=MSG).choices[0].message.content
    chunks = list(oa.chat.completions.create(model="gemini", messages=MSG, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain, (text, plain)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0


@check("openai: tools")
def _():
    r = oa.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id, call
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    follow = oa.chat.completions.create(model="gemini", tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C"},
    ])
    assert follow.choices[0].message.content


@check("openai: tools, streamed")
def _():
    chunks = list(oa.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="required", stream=True))
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather", calls
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@check("openai: JSON schema (parse)")
def _():
    r = oa.chat.completions.create(model="gemini", messages=MSG, response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}})
    doc = json.loads(r.choices[0].message.content)
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int), doc


@check("anthropic: plain")
def _():
    m = an.messages.create(model="gemini", max_tokens=1024, messages=MSG)
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@check("anthropic: stream")
def _():
    plain = an.messages.create(model="gemini", max_tokens=1024, messages=MSG).content[0].text
    with an.messages.stream(model="gemini", max_tokens=1024, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == plain, (text, plain)
    assert final.stop_reason == "end_turn"


@check("anthropic: tools")
def _():
    tool = {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    m = an.messages.create(model="gemini", max_tokens=1024, tools=[tool], tool_choice={"type": "any"}, messages=[{"role": "user", "content": "Weather in Rome?"}])
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input["city"], str), use
    assert m.stop_reason == "tool_use"
    follow = an.messages.create(model="gemini", max_tokens=1024, tools=[tool], messages=[
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "25 C"}]},
    ])
    assert follow.content[0].text


@check("anthropic: tools, streamed")
def _():
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    with an.messages.stream(model="gemini", max_tokens=1024, tools=[tool], tool_choice={"type": "any"}, messages=[{"role": "user", "content": "Weather?"}]) as s:
        final = s.get_final_message()
    assert final.content[-1].type == "tool_use" and isinstance(final.content[-1].input["city"], str), final


if failures:
    print(f"{len(failures)} FAILED: {failures}")
    sys.exit(1)
print("all gemini gateway SDK checks passed")
