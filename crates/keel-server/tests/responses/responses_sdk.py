"""The official openai SDK's Responses API against `keel serve`, unchanged but for base_url.

Routes (see tests/responses.rs): gpt -> `primary` (an OpenAI deployment failing every third
attempt) then `backup` (OpenAI). The last line is FACTS {json}: what tests/responses.rs checks
against the chaos upstreams' stats.
"""
import json
import sys

import openai

from checks import check, conclude

base = sys.argv[1]
facts = {"gpt_calls": 0}


oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)


def create(**kw):
    """responses.create on the gpt route, counted (each reaches the upstreams)."""
    facts["gpt_calls"] += 1
    return oa.responses.create(model="gpt", **kw)


r = create(input="Hello there", instructions="Answer briefly", max_output_tokens=400, metadata={"k": "v"})
check(
    "create: string input with instructions",
    r.object == "response" and r.status == "completed" and r.id.startswith("resp_") and r.model == "gpt"
    and r.output_text != "" and r.instructions == "Answer briefly" and r.metadata == {"k": "v"}
    and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens and r.usage.output_tokens > 0,
    repr(r),
)
check("create: one message item", [o.type for o in r.output] == ["message"] and r.output[0].role == "assistant", repr(r.output))

r = create(input=[
    {"role": "user", "content": "Hi"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
    {"role": "user", "content": [{"type": "input_text", "text": "Tell me about rivers"}]},
])
check("create: item list", r.status == "completed" and r.output_text != "", repr(r))

facts["gpt_calls"] += 1
raw = oa.responses.with_raw_response.create(model="gpt", input="Hi")
check(
    "create: x-keel headers",
    raw.headers.get("x-keel-attempts") is not None and raw.headers.get("x-keel-deployment") in ("primary", "backup")
    and raw.headers.get("x-keel-request-id") is not None,
    dict(raw.headers),
)
check("create: raw body parses", raw.parse().object == "response")

r = create(input="Write a long story about the sea", max_output_tokens=3)
check(
    "create: cut by max_output_tokens -> incomplete",
    r.status == "incomplete" and r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens",
    repr(r),
)

tools = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
ask = {"role": "user", "content": "Use get_weather for Paris"}
r1 = create(input=[ask], tools=tools)
calls = [o for o in r1.output if o.type == "function_call"]
check(
    "tools: a function_call item",
    len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id and "city" in json.loads(calls[0].arguments),
    repr(r1.output),
)
if calls:
    r2 = create(
        input=[ask, *r1.output, {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"}],
        tools=tools,
    )
    check(
        "tools: the output answered",
        r2.status == "completed" and r2.output_text != "" and not [o for o in r2.output if o.type == "function_call"],
        repr(r2),
    )

schema = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
r = create(input="A person, please", text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}})
try:
    person = json.loads(r.output_text)
    ok = isinstance(person.get("name"), str) and isinstance(person.get("age"), int)
except ValueError as e:
    ok, person = False, e
check("text.format json_schema", ok and r.text.format.type == "json_schema", repr((person, r)))

# Streaming: the SDK's accumulator must rebuild exactly the final response.
for i in range(3):
    facts["gpt_calls"] += 1
    with oa.responses.stream(model="gpt", input=f"Stream number {i} please", instructions="Be vivid") as s:
        events = list(s)
        final = s.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    types = [e.type for e in events]
    check(
        f"stream {i}: deltas add up to the final text",
        deltas != "" and deltas == final.output_text and final.status == "completed" and final.usage.output_tokens > 0,
        repr((deltas, final)),
    )
    check(f"stream {i}: sequence numbers", [e.sequence_number for e in events] == list(range(len(events))), repr(types))
    check(
        f"stream {i}: documented order",
        types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        and types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
        and set(types[4:-4]) == {"response.output_text.delta"},
        repr(types),
    )
    check(f"stream {i}: final event's response", events[-1].response.output_text == final.output_text, repr(events[-1]))

facts["gpt_calls"] += 1
with oa.responses.stream(model="gpt", input=[ask], tools=tools) as s:
    types = [e.type for e in s]
    final = s.get_final_response()
calls = [o for o in final.output if o.type == "function_call"]
check(
    "stream: a function call",
    len(calls) == 1 and "city" in json.loads(calls[0].arguments) and "response.function_call_arguments.done" in types
    and "response.function_call_arguments.delta" in types,
    repr((types, final)),
)

facts["gpt_calls"] += 1
events = list(oa.responses.create(model="gpt", input="Write a long story about the sea", max_output_tokens=3, stream=True))
check(
    "stream: cut by max_output_tokens -> response.incomplete",
    events[-1].type == "response.incomplete" and events[-1].response.incomplete_details.reason == "max_output_tokens",
    repr(events[-1]),
)

for name, items, want in [
    ("orphan function_call_output", [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
     "input[0].call_id: no function_call with call_id \"call_nope\" precedes this function_call_output"),
    ("unknown item type", [{"type": "computer_call_output", "call_id": "c"}],
     "input[0].type: input items of type `computer_call_output` are not supported"),
    ("nothing to answer", [{"type": "web_search_call", "id": "ws_1"}],
     "input: holds nothing to answer: no message, function_call or function_call_output"),
]:
    try:
        oa.responses.create(model="gpt", input=items)
        check(f"400: {name}", False, "no exception")
    except openai.BadRequestError as e:
        check(f"400: {name}", want in e.body.get("message", "") and e.body.get("type") == "invalid_request_error", repr(e.body))

try:
    oa.responses.create(model="no-such-route", input="x")
    check("unknown route -> NotFoundError", False, "no exception")
except openai.NotFoundError as e:
    check("unknown route -> NotFoundError", "no-such-route" in str(e), str(e))

conclude("FACTS " + json.dumps(facts), "all Responses SDK checks passed")
