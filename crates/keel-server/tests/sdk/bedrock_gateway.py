"""The official openai and anthropic SDKs reach AWS Bedrock deployments through Keel.

Routes (see tests/bedrock.rs): bedrock -> a healthy Bedrock deployment; throttled -> one
whose 1st and 3rd attempts are ThrottlingExceptions; failover -> an always-503 Bedrock
deployment, then a healthy one; trunc -> one whose first answer stops at max_tokens.
Prints `ATTEMPTS route n` lines (Keel's x-keel-attempts, summed) for the test to compare
with the chaos upstreams' own counts.
"""
import json
import sys

import anthropic
import openai

from checks import check, conclude

base = sys.argv[1]
attempts = {}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
    "additionalProperties": False,
}


def count(route, headers):
    attempts[route] = attempts.get(route, 0) + int(headers.get("x-keel-attempts", "0"))


oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0, timeout=20)
HELLO = [{"role": "user", "content": "Hello there"}]


def stream_text(route, **kw):
    raw = oa.chat.completions.with_raw_response.create(
        model=route, messages=HELLO, max_tokens=200, stream=True, stream_options={"include_usage": True}, **kw)
    count(route, raw.headers)
    parts, finish, usage, tools = [], None, None, {}
    for chunk in raw.parse():
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            for t in c.delta.tool_calls or []:
                slot = tools.setdefault(t.index, {"name": "", "args": ""})
                if t.function and t.function.name:
                    slot["name"] = t.function.name
                if t.function and t.function.arguments:
                    slot["args"] += t.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    return "".join(parts), finish, usage, tools, raw.headers


def plain(route, **kw):
    raw = oa.chat.completions.with_raw_response.create(model=route, messages=HELLO, max_tokens=200, **kw)
    count(route, raw.headers)
    return raw.parse(), raw.headers


# OpenAI SDK, plain and streaming.
r, h = plain("bedrock")
text = r.choices[0].message.content
check("openai plain", bool(text) and r.model == "bedrock" and r.choices[0].finish_reason == "stop", repr(r))
check("openai plain usage", r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, repr(r.usage))
check("openai plain served by bedrock", h.get("x-keel-deployment") == "br", dict(h))
s_text, finish, usage, _, _ = stream_text("bedrock")
check("openai stream says what the plain answer says", s_text == text, repr((s_text, text)))
check("openai stream finish and usage", finish == "stop" and usage is not None and usage.completion_tokens > 0,
      repr((finish, usage)))

# Tools, plain and streaming.
r, _ = plain("bedrock", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
calls = r.choices[0].message.tool_calls or []
ok = len(calls) == 1 and calls[0].function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
args = json.loads(calls[0].function.arguments) if ok else {}
check("openai tool call", ok and set(args) == {"city", "celsius"}, repr(r))
follow = HELLO + [
    {"role": "assistant", "tool_calls": [{"id": calls[0].id, "type": "function",
                                          "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
    {"role": "tool", "tool_call_id": calls[0].id, "content": "21 degrees"},
] if ok else HELLO
r2 = oa.chat.completions.create(model="bedrock", messages=follow, tools=[WEATHER], max_tokens=200)
check("openai tool result answered", bool(r2.choices[0].message.content), repr(r2))
_, finish, _, tools, _ = stream_text("bedrock", tools=[WEATHER], tool_choice="required")
check("openai tool call streamed", finish == "tool_calls" and tools.get(0, {}).get("name") == "get_weather"
      and set(json.loads(tools[0]["args"])) == {"city", "celsius"}, repr((finish, tools)))

# JSON schema (a forced tool on Bedrock), plain and streaming.
fmt = {"type": "json_schema", "json_schema": {"name": "movie", "schema": SCHEMA, "strict": True}}
r, _ = plain("bedrock", response_format=fmt)
doc = json.loads(r.choices[0].message.content)
check("openai json schema", set(doc) == {"title", "year"} and isinstance(doc["year"], int)
      and r.choices[0].finish_reason == "stop", repr(r))
s_text, finish, _, tools, _ = stream_text("bedrock", response_format=fmt)
doc = json.loads(s_text)
check("openai json schema streamed", set(doc) == {"title", "year"} and finish == "stop" and not tools,
      repr((s_text, finish, tools)))

# Anthropic SDK, plain, streaming and tools.
m = an.messages.create(model="bedrock", max_tokens=200, messages=HELLO)
check("anthropic plain", m.content[0].type == "text" and m.content[0].text == text and m.stop_reason == "end_turn",
      repr(m))
with an.messages.stream(model="bedrock", max_tokens=200, messages=HELLO) as st:
    a_text = "".join(st.text_stream)
    final = st.get_final_message()
check("anthropic stream", a_text == text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0,
      repr((a_text, final)))
a_tool = {"name": "get_weather", "description": "The weather in a city.",
          "input_schema": WEATHER["function"]["parameters"]}
m = an.messages.create(model="bedrock", max_tokens=200, messages=HELLO, tools=[a_tool],
                       tool_choice={"type": "tool", "name": "get_weather"})
uses = [b for b in m.content if b.type == "tool_use"]
check("anthropic tool use", m.stop_reason == "tool_use" and uses and uses[0].name == "get_weather"
      and set(uses[0].input) == {"city", "celsius"}, repr(m))
with an.messages.stream(model="bedrock", max_tokens=200, messages=HELLO, tools=[a_tool],
                        tool_choice={"type": "any"}) as st:
    final = st.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
check("anthropic tool use streamed", final.stop_reason == "tool_use" and uses
      and set(uses[0].input) == {"city", "celsius"}, repr(final))

# Faults: a throttled attempt is retried, a 503 deployment fallen over.
r, h = plain("throttled")
check("throttling retried", r.choices[0].message.content == text and h.get("x-keel-attempts") == "2", dict(h))
s_text, finish, _, _, h = stream_text("throttled")
check("throttling retried, streamed", s_text == text and finish == "stop", repr((s_text, finish)))
r, h = plain("failover")
check("503 fallen over", r.choices[0].message.content == text and h.get("x-keel-deployment") == "br-b", dict(h))
s_text, finish, _, _, h = stream_text("failover")
check("503 fallen over, streamed", s_text == text and finish == "stop" and h.get("x-keel-deployment") == "br-b",
      repr((s_text, dict(h))))

# A max_tokens stop is a truncation: Keel asks for the rest and stitches it.
r, h = plain("trunc")
check("max_tokens stop continued", r.choices[0].message.content == text and r.choices[0].finish_reason == "stop",
      repr((r, text)))

# A stream exception event or a cut inside the commit window is retried invisibly.
for route in ["stream-exception", "stream-cut"]:
    s_text, finish, _, _, _ = stream_text(route)
    check(f"{route} retried before the commit", s_text == text and finish == "stop", repr((s_text, finish)))

for route, n in sorted(attempts.items()):
    print(f"ATTEMPTS {route} {n}")
conclude("all bedrock checks passed")
