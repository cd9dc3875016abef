"""A native Responses deployment's events and items Keel has no chat reading for
(reasoning summaries, encrypted reasoning, web search calls) reach the client as the
provider sent them, streamed and not, and are kept in the stored response.

argv: keel base URL, chaos base URL of the fault-free `direct` upstream.
Route `tools` (see tests/responses_native.rs): `direct` (responses = true,
builtin_tools = ["web_search"]) then `chat` (chat completions only); route `translated`:
`chat` then `an` (Anthropic); route `resume`: `native_cut` (responses = true, its streams cut
after 19 events, commit window off) then `an`.
What Keel answers is compared with what the SDK gets straight from chaos for the same
request: equal but for the ids (the response's is Keel's, items' are per attempt), the
creation time and `model` (the route's name through Keel).
The last line is FACTS {json}.
"""
import json
import sys

import openai

from checks import check, conclude

base, direct_url = sys.argv[1], sys.argv[2]
facts = {"keel_calls": 0}


ID_PREFIXES = ("resp_", "rs_", "ws_", "item_", "msg_", "gAAAAB")


def norm(v, ids=None):
    """`v` with each id replaced by its order of first appearance, no creation time and
    no model (they differ by attempt and by who answered)."""
    ids = {} if ids is None else ids
    if isinstance(v, dict):
        return {k: norm(x, ids) for k, x in v.items() if k not in ("created_at", "model")}
    if isinstance(v, list):
        return [norm(x, ids) for x in v]
    if isinstance(v, str) and v.startswith(ID_PREFIXES):
        return "id#%d" % ids.setdefault(v, len(ids))
    return v


request = dict(
    input="What is in the news about sea turtles?",
    tools=[{"type": "web_search"}],
    reasoning={"effort": "low", "summary": "auto"},
    include=["reasoning.encrypted_content"],
    max_output_tokens=400,
)
MODELLED_ONLY_NATIVELY = {
    "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
    "response.web_search_call.in_progress", "response.web_search_call.searching",
    "response.web_search_call.completed",
}

direct = openai.OpenAI(base_url=direct_url, api_key="upstream-key", max_retries=0)
oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)


def keel():
    facts["keel_calls"] += 1
    return oa


# create(stream=True): every event the provider sent, in its order, numbered 0..n.
want = [e.to_dict() for e in direct.responses.create(model="gpt-4o-mini", stream=True, **request)]
got = [e.to_dict() for e in keel().responses.create(model="tools", stream=True, **request)]
types = [e["type"] for e in got]
check("the provider's events, in order", types == [e["type"] for e in want], repr(types))
check("events Keel has no chat reading for arrive", MODELLED_ONLY_NATIVELY <= set(types), repr(types))
check("sequence numbers 0..n", [e["sequence_number"] for e in got] == list(range(len(got))), repr(got))
check("each event as the provider sent it", norm(got) == norm(want),
      json.dumps([norm(got), norm(want)], indent=1))
lifecycle = [e["response"] for e in got if "response" in e]
check("one response id, Keel's, and the route as model",
      len({r["id"] for r in lifecycle}) == 1 and all(r["model"] == "tools" for r in lifecycle), repr(lifecycle))
streamed = got[-1]["response"]

# The responses.stream(...) helper accumulates exactly the provider's final response.
with direct.responses.stream(model="gpt-4o-mini", **request) as s:
    list(s)
    want_final = s.get_final_response().to_dict()
with keel().responses.stream(model="tools", **request) as s:
    events = list(s)
    final = s.get_final_response()
check("stream helper: reasoning summary deltas",
      "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
      == final.output[0].summary[0].text, repr(final.output))
check("stream helper: the final response is the provider's",
      norm(final.to_dict()) == norm(want_final), json.dumps([norm(final.to_dict()), norm(want_final)], indent=1))
check("stream helper: items", [o.type for o in final.output] == ["reasoning", "web_search_call", "message"]
      and final.output[0].encrypted_content and final.output[1].action.query.startswith("What is in the news")
      and final.output_text != "", repr(final.output))

# Not streamed: the provider's items unchanged.
want_plain = direct.responses.create(model="gpt-4o-mini", **request).to_dict()
plain = keel().responses.create(model="tools", **request)
check("create: the provider's output items", norm(plain.to_dict()) == norm(want_plain),
      json.dumps([norm(plain.to_dict()), norm(want_plain)], indent=1))
check("create: reasoning with encrypted content and a web search call",
      [o.type for o in plain.output] == ["reasoning", "web_search_call", "message"]
      and plain.output[0].encrypted_content and plain.output[0].summary, repr(plain.output))

def unparsed(v):
    """`v` without the `parsed` members the SDK's stream helper adds."""
    if isinstance(v, dict):
        return {k: unparsed(x) for k, x in v.items() if k != "parsed"}
    if isinstance(v, list):
        return [unparsed(x) for x in v]
    return v


# The stored responses keep them.
for label, resp in [("create", plain.to_dict()), ("stream", unparsed(final.to_dict())), ("raw stream", streamed)]:
    kept = oa.responses.retrieve(resp["id"]).to_dict()
    check(f"retrieve ({label}) keeps every item", kept["output"] == resp["output"] and kept["status"] == "completed",
          json.dumps([kept["output"], resp["output"]], indent=1))

# A conversation with a web search goes on, without the built-in tool, on either deployment.
t2 = keel().responses.create(model="tools", input="And what about whales?", previous_response_id=plain.id)
check("continued after a web search", t2.status == "completed" and t2.output_text != "", repr(t2))
t3 = keel().responses.create(model="translated", input="And what about dolphins?", previous_response_id=plain.id)
check("continued on a chat deployment", t3.status == "completed" and t3.output_text != "", repr(t3))

# A native stream that breaks after its first words is resumed at another deployment:
# its events up to the break, then the rest of the same message, in one sequence.
with oa.responses.stream(model="resume", input=request["input"], reasoning=request["reasoning"]) as s:
    events = list(s)
    final = s.get_final_response()
types = [e.type for e in events]
deltas = [e for e in events if e.type == "response.output_text.delta"]
check("resume: numbered 0..n", [e.sequence_number for e in events] == list(range(len(events))), repr(types))
check("resume: the provider's reasoning summary came first", "response.reasoning_summary_text.delta" in types
      and types.index("response.reasoning_summary_text.delta") < types.index("response.output_text.delta"), repr(types))
check("resume: one message, its deltas all of its text",
      [o.type for o in final.output] == ["reasoning", "message"] and len({e.item_id for e in deltas}) == 1
      and deltas[0].item_id == final.output[1].id and "".join(e.delta for e in deltas) == final.output_text
      and final.status == "completed" and types[-1] == "response.completed", repr((types, final)))
facts["partial"] = deltas[0].delta if deltas else ""

conclude("FACTS " + json.dumps(facts), "all native event checks passed")
