"""The official openai and anthropic SDKs through Keel to Azure OpenAI
deployments (keel-chaos' azure dialect). Usage: azure_gateway.py KEEL_URL

Routes (see tests/azure.rs): azure -> an Azure deployment at a dated API
version, azure-v1 -> one on the v1 API with an Entra token, emb -> an Azure
embeddings deployment; r429, r429s, r500, r408 -> an Azure deployment that
fails its first attempt; r503, rfilter, rctx, r400 -> an Azure deployment
that always fails, then an OpenAI one; rcf -> an Azure deployment whose
completions the content filter stops, with an OpenAI refusal fallback.
Each request is made exactly once: tests/azure.rs counts the attempts.
"""
import json
import sys
import traceback

import anthropic
import openai

base = sys.argv[1]
failures = []
oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0, timeout=20)
MSG = [{"role": "user", "content": "Hello there"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def check(name):
    def wrap(fn):
        try:
            fn()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report everything
            failures.append(name)
            print(f"FAIL {name}\n{traceback.format_exc()}")
        return fn
    return wrap


def openai_plain(route):
    raw = oa.chat.completions.with_raw_response.create(model=route, messages=MSG, max_tokens=20)
    r = raw.parse()
    assert r.choices[0].message.content and r.model == route, r
    return raw.headers


def openai_stream(route):
    text, finish = "", None
    with oa.chat.completions.create(model=route, messages=MSG, max_tokens=1000, stream=True,
                                    stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
    assert text and finish == "stop", (text, finish)


for route in ["azure", "azure-v1"]:
    @check(f"openai client, {route}: plain and streaming")
    def _():
        openai_plain(route)
        openai_stream(route)

    @check(f"openai client, {route}: tools")
    def _():
        r = oa.chat.completions.create(model=route, messages=MSG, tools=[TOOL], tool_choice="required")
        call = r.choices[0].message.tool_calls[0]
        assert r.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments)["city"]
        with oa.chat.completions.stream(model=route, messages=MSG, tools=[TOOL], tool_choice="required") as s:
            final = s.get_final_completion()
        assert final.choices[0].message.tool_calls[0].function.name == "get_weather"

    @check(f"openai client, {route}: json_schema")
    def _():
        r = oa.chat.completions.create(
            model=route, messages=MSG,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA, "strict": True}},
        )
        v = json.loads(r.choices[0].message.content)
        assert isinstance(v["name"], str) and isinstance(v["age"], int), v

    @check(f"anthropic client, {route}: plain and streaming")
    def _():
        m = an.messages.create(model=route, max_tokens=1000, messages=MSG)
        assert m.content[0].type == "text" and m.content[0].text and m.stop_reason == "end_turn", m
        with an.messages.stream(model=route, max_tokens=1000, messages=MSG) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text and final.stop_reason == "end_turn", (text, final)

    @check(f"anthropic client, {route}: tools")
    def _():
        tool = {"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}
        m = an.messages.create(model=route, max_tokens=200, messages=MSG, tools=[tool],
                               tool_choice={"type": "any"})
        use = [b for b in m.content if b.type == "tool_use"][0]
        assert m.stop_reason == "tool_use" and use.name == "get_weather" and use.input["city"], m
        with an.messages.stream(model=route, max_tokens=200, messages=MSG, tools=[tool],
                                tool_choice={"type": "tool", "name": "get_weather"}) as s:
            final = s.get_final_message()
        assert [b for b in final.content if b.type == "tool_use"][0].input["city"], final

    @check(f"anthropic client, {route}: JSON schema (output_config.format)")
    def _():
        m = an.post("/v1/messages", cast_to=anthropic.types.Message, body={
            "model": route, "max_tokens": 200, "messages": MSG,
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
        })
        v = json.loads(m.content[0].text)
        assert isinstance(v["name"], str) and isinstance(v["age"], int), v


@check("openai client: embeddings from an Azure deployment")
def _():
    r = oa.embeddings.create(model="emb", input=["a", "hello"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 1536, r


@check("429 (retry-after-ms) retried on the same Azure deployment, plain and streamed")
def _():
    headers = openai_plain("r429")
    assert headers["x-keel-attempts"] == "2", dict(headers)
    openai_stream("r429s")


@check("500 and 408 retried on the same Azure deployment")
def _():
    assert openai_plain("r500")["x-keel-attempts"] == "2"
    assert openai_plain("r408")["x-keel-attempts"] == "2"


@check("503, prompt filtered, context overflow: fall over to OpenAI")
def _():
    openai_plain("r503")
    openai_plain("rfilter")
    m = an.messages.create(model="rfilter", max_tokens=20, messages=MSG)
    assert m.content[0].text
    openai_plain("rctx")


@check("a completion stopped by Azure's content filter falls back")
def _():
    openai_plain("rcf")


@check("a 400 is neither retried nor fallen back from")
def _():
    try:
        oa.chat.completions.create(model="r400", messages=MSG)
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        return
    raise AssertionError("a 400 from Azure was not passed on")


if failures:
    print(f"{len(failures)} failed: {failures}")
    sys.exit(1)
print("all azure gateway checks passed")
