"""Stored responses through Keel with the official openai SDK: retrieve, delete,
input_items, store: false, previous_response_id (tool round trip and a three-turn
conversation on route `chat3`, whose middle turn the Anthropic deployment answers
after the primary failed). The last line is FACTS {json} for tests/responses.rs.
"""
import json
import sys

import openai

from checks import check, conclude

base = sys.argv[1]
facts = {}


def expect_not_found(name, f, message=""):
    try:
        f()
        check(name, False, "no exception")
    except openai.NotFoundError as e:
        check(name, e.status_code == 404 and e.body.get("type") == "invalid_request_error"
              and message in e.body.get("message", ""), repr(e.body))


oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)

r = oa.responses.create(model="gpt", input="Remember the word lighthouse", instructions="Be brief")
got = oa.responses.retrieve(r.id)
check("retrieve", got.id == r.id and got.output_text == r.output_text and got.status == "completed", repr(got))
items = oa.responses.input_items.list(r.id)
check(
    "input_items.list",
    len(items.data) == 1 and items.data[0].type == "message" and items.data[0].role == "user"
    and items.data[0].content[0].text == "Remember the word lighthouse" and items.data[0].id,
    repr(items),
)
many = oa.responses.create(model="gpt", input=[
    {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"},
])
asc = oa.responses.input_items.list(many.id, order="asc")
desc = oa.responses.input_items.list(many.id)
check(
    "input_items order",
    [i.content[0].text for i in asc.data] == ["one", "two", "three"]
    and [i.content[0].text for i in desc.data] == ["three", "two", "one"],
    repr((asc, desc)),
)
oa.responses.delete(r.id)
expect_not_found("retrieve after delete -> 404", lambda: oa.responses.retrieve(r.id))
expect_not_found("delete twice -> 404", lambda: oa.responses.delete(r.id))
expect_not_found("unknown id -> 404", lambda: oa.responses.retrieve("resp_nope"))

unstored = oa.responses.create(model="gpt", input="Do not keep this", store=False)
check("store: false echoed", unstored.store is False, repr(unstored))
expect_not_found("store: false is not kept", lambda: oa.responses.retrieve(unstored.id))
expect_not_found(
    "unknown previous_response_id -> 404",
    lambda: oa.responses.create(model="gpt", input="x", previous_response_id="resp_nope"),
    'previous_response_id: no stored response with id "resp_nope"',
)
# A response made with store: false cannot be continued, whatever the new turn's store.
for store in (False, True):
    expect_not_found(
        f"previous_response_id of a store: false response (store: {store}) -> 404",
        lambda: oa.responses.create(model="gpt", input="x", previous_response_id=unstored.id, store=store),
        f'previous_response_id: no stored response with id "{unstored.id}" (unknown, deleted, or stored with store: false)',
    )

with oa.responses.stream(model="gpt", input="Stream and keep this") as s:
    final = s.get_final_response()
kept = oa.responses.retrieve(final.id)
check("a streamed response is kept", kept.output_text == final.output_text and kept.status == "completed", repr(kept))

tools = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
r1 = oa.responses.create(model="gpt", input="Use get_weather for Oslo", tools=tools)
calls = [o for o in r1.output if o.type == "function_call"]
check("tool round trip: call", len(calls) == 1, repr(r1))
if calls:
    r2 = oa.responses.create(
        model="gpt", previous_response_id=r1.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "snow, -3C"}],
    )
    check("tool round trip: answer", r2.output_text != "" and r2.previous_response_id == r1.id, repr(r2))

t1 = oa.responses.create(model="chat3", input="My name is Ada and I like turtles")
t2 = oa.responses.create(model="chat3", input="Which animal do I like?", previous_response_id=t1.id)
raw = oa.responses.with_raw_response.create(model="chat3", input="And what is my name?", previous_response_id=t2.id)
t3 = raw.parse()
check("three turns", all(t.status == "completed" and t.output_text for t in (t1, t2, t3)), repr((t1, t2, t3)))
check("third turn served by the primary", raw.headers.get("x-keel-deployment") == "first", dict(raw.headers))
facts["turns"] = [t1.output_text, t2.output_text, t3.output_text]

conclude("FACTS " + json.dumps(facts), "all Responses store checks passed")
