"""stream_upstream: answers Keel assembled from a provider's stream parse in the official
SDKs exactly like the provider's plain answers (tests/sdk.rs starts Keel).

Routes: oa / oa-plain -> one OpenAI upstream, an / an-plain -> one Anthropic upstream; the
first of each pair asks the upstream for a stream and assembles the answer.
"""
import sys

import anthropic
import openai

from checks import check, conclude

base = sys.argv[1]


oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0)

tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
atool = {"name": "get_weather", "input_schema": tool["function"]["parameters"]}


def openai_answer(route, tools):
    kw = {"tools": [tool], "tool_choice": "required"} if tools else {}
    r = oa.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "Tell me about rivers."}], max_tokens=60, **kw)
    d = r.model_dump()
    for k in ("id", "created", "model"):
        d.pop(k)
    return d


def anthropic_answer(route, tools):
    kw = {"tools": [atool], "tool_choice": {"type": "tool", "name": "get_weather"}} if tools else {}
    m = an.messages.create(
        model=route, max_tokens=60, messages=[{"role": "user", "content": "Tell me about rivers."}], **kw)
    d = m.model_dump()
    for k in ("id", "model"):
        d.pop(k)
    return d


for upstream in ["oa", "an"]:
    for tools in [False, True]:
        for client, ask in [("openai", openai_answer), ("anthropic", anthropic_answer)]:
            streamed = ask(upstream, tools)
            plain = ask(upstream + "-plain", tools)
            name = f"{client} client, {upstream} upstream, {'tool call' if tools else 'text'}"
            check(name, streamed == plain, repr((streamed, plain)))

conclude("all assembled checks passed")
