"""Gemini thought signatures through Keel with the official openai and anthropic SDKs.

Usage: gemini_signatures_sdk.py KEEL_URL. Keel's route `sig` is a Gemini
deployment whose upstream (keel chaos) signs its function calls and refuses,
as Gemini 3 does, a function-calling step sent back without its signature.
Set up by tests/gemini_signatures.rs, which then reads what chaos received.
Prints one line per check; exits non-zero on any failure.
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
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = {"role": "user", "content": "What is the weather in Paris?"}


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


def signature_of(call):
    extra = call.model_extra or {}
    return extra["extra_content"]["google"]["thought_signature"]


@check("openai: the tool call carries extra_content.google.thought_signature, and the follow-up passes")
def _():
    r = oa.chat.completions.create(model="sig", messages=[ASK], tools=[WEATHER], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    sig = signature_of(call)
    assert isinstance(sig, str) and len(sig) > 20, sig
    print(f"SIGNATURE {sig}")
    follow = oa.chat.completions.create(model="sig", tools=[WEATHER], messages=[
        ASK,
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C"},
    ])
    assert follow.choices[0].message.content, follow


@check("openai: streamed, the signature is on the tool call delta")
def _():
    chunks = list(oa.chat.completions.create(model="sig", messages=[ASK], tools=[WEATHER], tool_choice="required", stream=True))
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather", calls
    sig = signature_of(calls[0])
    plain = oa.chat.completions.create(model="sig", messages=[ASK], tools=[WEATHER], tool_choice="required")
    assert sig == signature_of(plain.choices[0].message.tool_calls[0]), "stream and plain signatures differ"


@check("openai: history from another model (no signature) reaches Gemini with Google's skip signature")
def _():
    follow = oa.chat.completions.create(model="sig", tools=[WEATHER], messages=[
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_other", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_other", "content": "19 C"},
    ])
    assert follow.choices[0].message.content, follow


@check("openai: a signature for another call is refused by Gemini (400, not retried)")
def _():
    r = oa.chat.completions.create(model="sig", messages=[ASK], tools=[WEATHER], tool_choice="required")
    message = r.choices[0].message.model_dump(exclude_none=True)
    message["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "Lyon"})
    try:
        oa.chat.completions.create(model="sig", tools=[WEATHER], messages=[
            ASK, message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "20 C"},
        ])
    except openai.BadRequestError as e:
        assert "Corrupted thought signature" in str(e), e
    else:
        raise AssertionError("a moved signature was accepted")


@check("anthropic: tool round trip (Keel sends the skip signature)")
def _():
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    m = an.messages.create(model="sig", max_tokens=1024, tools=[tool], tool_choice={"type": "any"}, messages=[ASK])
    use = [b for b in m.content if b.type == "tool_use"][0]
    follow = an.messages.create(model="sig", max_tokens=1024, tools=[tool], messages=[
        ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "25 C"}]},
    ])
    assert follow.content[0].text, follow


if failures:
    print(f"{len(failures)} FAILED: {failures}")
    sys.exit(1)
print("all gemini signature SDK checks passed")
