"""The official openai SDK against keel-chaos. Usage: openai_sdk.py ROOT_URL

ROOT_URL is http://127.0.0.1:PORT; upstreams are set up by tests/sdk.rs.
Prints one line per check; exits non-zero with FAIL lines on any failure.
"""
import json
import sys
import traceback

import openai

ROOT = sys.argv[1]
failures = []


def client(upstream, key="sk-chaos-good"):
    return openai.OpenAI(base_url=f"{ROOT}/{upstream}/v1", api_key=key, max_retries=0, timeout=10)


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


def expect_error(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc_type.__name__}, got a success")


MSG = [{"role": "user", "content": "Say something."}]


@check("plain chat")
def _():
    r = client("ok-openai").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert r.id.startswith("chatcmpl-"), r.id
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check("plain chat, raw response headers")
def _():
    raw = client("ok-openai").chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content


@check("streaming chat with usage")
def _():
    stream = client("ok-openai").chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text, "no streamed text"
    assert finish == "stop", finish
    assert usage and usage.completion_tokens > 0, usage


@check("stream helper accumulates")
def _():
    with client("ok-openai").chat.completions.stream(model="gpt-4o-mini", messages=MSG) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content


@check("max_tokens truncates")
def _():
    r = client("ok-openai").chat.completions.create(model="gpt-4o-mini", messages=MSG, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@check("tool call")
def _():
    r = client("ok-openai").chat.completions.create(
        model="gpt-4o-mini", messages=MSG, tools=[TOOL], tool_choice="required"
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("c", "f"), args


@check("streaming tool call")
def _():
    with client("ok-openai").chat.completions.stream(
        model="gpt-4o-mini", messages=MSG, tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments)["unit"] in ("c", "f")


@check("json_schema response_format")
def _():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string"}},
            "married": {"type": "boolean"},
        },
        "required": ["name", "age", "tags", "married"],
        "additionalProperties": False,
    }
    r = client("ok-openai").chat.completions.create(
        model="gpt-4o-mini", messages=MSG,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    v = json.loads(r.choices[0].message.content)
    assert isinstance(v["name"], str) and isinstance(v["age"], int) and 0 <= v["age"] <= 120, v
    assert isinstance(v["tags"], list) and isinstance(v["married"], bool), v


@check("parse() with a pydantic model")
def _():
    import pydantic

    class Pet(pydantic.BaseModel):
        kind: str
        legs: int

    class Person(pydantic.BaseModel):
        name: str
        pets: list[Pet]

    r = client("ok-openai").chat.completions.parse(model="gpt-4o-mini", messages=MSG, response_format=Person)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person) and all(isinstance(p, Pet) for p in person.pets), person


@check("models list")
def _():
    ids = [m.id for m in client("ok-openai").models.list()]
    assert "gpt-4o-mini" in ids, ids


@check("429 -> RateLimitError")
def _():
    e = expect_error(openai.RateLimitError, lambda: client("o-429").chat.completions.create(model="gpt-4o-mini", messages=MSG))
    assert e.code == "rate_limit_exceeded", e.code
    assert e.response.headers["retry-after-ms"]


@check("quota -> RateLimitError insufficient_quota")
def _():
    e = expect_error(openai.RateLimitError, lambda: client("o-quota").chat.completions.create(model="gpt-4o-mini", messages=MSG))
    assert e.code == "insufficient_quota" and e.type == "insufficient_quota", (e.code, e.type)


@check("wrong key -> AuthenticationError")
def _():
    e = expect_error(openai.AuthenticationError,
                     lambda: client("ok-openai", key="sk-wrong").chat.completions.create(model="gpt-4o-mini", messages=MSG))
    assert e.code == "invalid_api_key", e.code


@check("400 -> BadRequestError")
def _():
    expect_error(openai.BadRequestError, lambda: client("o-400").chat.completions.create(model="gpt-4o-mini", messages=MSG))


@check("context overflow -> BadRequestError context_length_exceeded")
def _():
    e = expect_error(openai.BadRequestError, lambda: client("o-ctx").chat.completions.create(model="gpt-4o-mini", messages=MSG))
    assert e.code == "context_length_exceeded", e.code


@check("404 model -> NotFoundError")
def _():
    expect_error(openai.NotFoundError, lambda: client("o-404").chat.completions.create(model="gpt-4o-mini", messages=MSG))


@check("500 -> InternalServerError")
def _():
    expect_error(openai.InternalServerError, lambda: client("o-500").chat.completions.create(model="gpt-4o-mini", messages=MSG))


@check("503 overloaded -> InternalServerError")
def _():
    e = expect_error(openai.InternalServerError, lambda: client("o-503").chat.completions.create(model="gpt-4o-mini", messages=MSG))
    assert e.status_code == 503


@check("reset -> APIConnectionError")
def _():
    expect_error(openai.APIConnectionError, lambda: client("o-reset").chat.completions.create(model="gpt-4o-mini", messages=MSG))


@check("cut stream -> error while iterating")
def _():
    stream = client("o-cut").chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
    try:
        for _ in stream:
            pass
    except (openai.APIError, Exception) as e:  # noqa: BLE001 - any error is the point
        print(f"     (cut surfaced as {type(e).__name__})")
        return
    raise AssertionError("a cut stream ended cleanly")


@check("embeddings: string, array, base64 default, dimensions")
def _():
    c = client("ok-openai")
    one = c.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    assert one.object == "list" and len(one.data) == 1 and len(one.data[0].embedding) == 1536, one
    many = c.embeddings.create(model="text-embedding-3-small", input=["a", "hello"])  # base64 on the wire
    assert [d.index for d in many.data] == [0, 1]
    assert all(abs(x - y) < 1e-6 for x, y in zip(many.data[1].embedding, one.data[0].embedding))
    short = c.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert short.usage.prompt_tokens == 3
    expect_error(openai.BadRequestError, lambda: c.embeddings.create(model="text-embedding-3-small", input=[]))


if failures:
    print(f"FAILED: {len(failures)} check(s): {', '.join(failures)}")
    sys.exit(1)
print("all openai checks passed")
