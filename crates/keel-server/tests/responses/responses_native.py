"""Native Responses deployments: the official openai SDK straight at `keel chaos` (its
/v1/responses must be what the SDK expects), then through Keel.

argv: keel base URL, chaos base URL of the fault-free `direct` upstream.
Routes (see tests/responses_native.rs): gpt -> `native` (an OpenAI deployment with
responses = true, failing every third attempt) then `chat` (chat completions only);
claude -> `native_down` (responses = true, always failing) then `an` (Anthropic).
The last line is FACTS {json}: what the test checks against the chaos stats.
"""
import json
import sys

import openai
import pydantic

from checks import check, conclude

base, direct_url = sys.argv[1], sys.argv[2]
facts = {"gpt_calls": 0, "claude_calls": 0, "turns": []}


class Person(pydantic.BaseModel):
    name: str
    age: int


tools = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}]
ask = {"role": "user", "content": "Use get_weather for Paris"}


def exercise(oa, label, model, count):
    """create, stream, parse and a tool round trip on `model`; `count()` before each call."""
    count()
    r = oa.responses.create(model=model, input="Hello there", instructions="Be brief", max_output_tokens=400)
    check(f"{label}: create", r.object == "response" and r.status == "completed" and r.output_text != ""
          and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, repr(r))
    count()
    with oa.responses.stream(model=model, input="Stream please") as s:
        events = list(s)
        final = s.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(f"{label}: stream accumulates the final response",
          deltas != "" and deltas == final.output_text and final.status == "completed"
          and events[-1].type == "response.completed" and events[-1].response.output_text == final.output_text,
          repr((deltas, final)))
    check(f"{label}: stream sequence numbers",
          [e.sequence_number for e in events] == list(range(len(events))), repr([e.type for e in events]))
    count()
    p = oa.responses.parse(model=model, input="A person, please", text_format=Person)
    check(f"{label}: parse with a Pydantic model", isinstance(p.output_parsed, Person), repr(p))
    count()
    r1 = oa.responses.create(model=model, input=[ask], tools=tools)
    calls = [o for o in r1.output if o.type == "function_call"]
    check(f"{label}: function_call", len(calls) == 1 and "city" in json.loads(calls[0].arguments), repr(r1.output))
    if calls:
        count()
        r2 = oa.responses.create(
            model=model, tools=tools,
            input=[ask, *r1.output, {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        )
        check(f"{label}: function output answered", r2.output_text != "" and r2.status == "completed", repr(r2))
    count()
    r = oa.responses.create(model=model, input="Write a long story about the sea", max_output_tokens=3)
    check(f"{label}: incomplete", r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens",
          repr(r))
    count()
    events = list(oa.responses.create(model=model, input=[ask], tools=tools, stream=True))
    done = [e for e in events if e.type == "response.output_item.done"]
    check(f"{label}: streamed function call",
          done and done[-1].item.type == "function_call" and "city" in json.loads(done[-1].item.arguments)
          and any(e.type == "response.function_call_arguments.delta" for e in events), repr(events))


# The SDK straight at chaos: what Keel's native deployments are tested against.
direct = openai.OpenAI(base_url=direct_url, api_key="upstream-key", max_retries=0)
exercise(direct, "chaos", "gpt-4o-mini", lambda: None)

oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)


def gpt():
    facts["gpt_calls"] += 1


def claude():
    facts["claude_calls"] += 1


exercise(oa, "keel gpt", "gpt", gpt)
exercise(oa, "keel claude", "claude", claude)

# A field Keel does not model reaches the native deployment as the client sent it.
gpt()
r = oa.responses.create(model="gpt", input="Hi", extra_body={"prompt_cache_key": "cache-key-7"})
check("unknown field passes", r.status == "completed", repr(r))

# A conversation: the native deployment is sent the whole history (Keel holds it).
gpt()
t1 = oa.responses.create(model="gpt", input="My name is Ada and I like turtles")
gpt()
t2 = oa.responses.create(model="gpt", input="Which animal do I like?", previous_response_id=t1.id)
facts["turns"] = [t1.output_text, t2.output_text]
check("a stored native response continues", t2.previous_response_id == t1.id and t2.output_text != "", repr(t2))
got = oa.responses.retrieve(t2.id)
check("retrieve a native response", got.id == t2.id and got.output_text == t2.output_text and got.model == "gpt",
      repr(got))

conclude("FACTS " + json.dumps(facts), "all native Responses checks passed")
