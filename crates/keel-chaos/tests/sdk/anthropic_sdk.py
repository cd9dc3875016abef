"""The official anthropic SDK against keel-chaos. Usage: anthropic_sdk.py ROOT_URL

ROOT_URL is http://127.0.0.1:PORT; upstreams are set up by tests/sdk.rs.
Prints one line per check; exits non-zero with FAIL lines on any failure.
"""
import json
import sys
import traceback

import anthropic

ROOT = sys.argv[1]
failures = []
MODEL = "claude-sonnet-4-5"
MSG = [{"role": "user", "content": "Say something."}]


def client(upstream, key="sk-ant-chaos-good"):
    return anthropic.Anthropic(base_url=f"{ROOT}/{upstream}", api_key=key, max_retries=0, timeout=10)


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


def expect_error(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc_type.__name__}, got a success")


def create(upstream, **kw):
    args = dict(model=MODEL, max_tokens=256, messages=MSG)
    args.update(kw)
    return client(upstream).messages.create(**args)


@check("plain message")
def _():
    m = create("ok-anthropic")
    assert m.id.startswith("msg_"), m.id
    assert m.role == "assistant" and m.type == "message"
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@check("request id header")
def _():
    raw = client("ok-anthropic").messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=MSG)
    assert raw.headers["request-id"].startswith("req_")
    assert raw.parse().content


@check("streaming message (raw events)")
def _():
    types = [e.type for e in create("ok-anthropic", stream=True)]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert "content_block_delta" in types and "message_delta" in types, types


@check("stream helper accumulates")
def _():
    with client("ok-anthropic").messages.stream(model=MODEL, max_tokens=256, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@check("max_tokens truncates")
def _():
    m = create("ok-anthropic", max_tokens=3)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3, m


@check("prefill continuation")
def _():
    m = create("ok-anthropic", messages=MSG + [{"role": "assistant", "content": "Once upon a"}])
    assert m.content[0].text


TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"],
    },
}


@check("tool use")
def _():
    m = create("ok-anthropic", tools=[TOOL], tool_choice={"type": "any"})
    assert m.stop_reason == "tool_use", m.stop_reason
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert isinstance(block.input["city"], str) and 1 <= block.input["days"] <= 7, block.input


@check("streaming tool use (input_json_delta)")
def _():
    with client("ok-anthropic").messages.stream(
        model=MODEL, max_tokens=256, messages=MSG, tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"}
    ) as s:
        final = s.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and 1 <= block.input["days"] <= 7, block


@check("models list")
def _():
    ids = [m.id for m in client("ok-anthropic").models.list()]
    assert MODEL in ids, ids


@check("429 -> RateLimitError")
def _():
    e = expect_error(anthropic.RateLimitError, lambda: create("a-429"))
    assert e.response.headers["retry-after"]
    assert e.body["error"]["type"] == "rate_limit_error", e.body


@check("529 -> OverloadedError (an InternalServerError)")
def _():
    e = expect_error(anthropic.InternalServerError, lambda: create("a-529"))
    assert e.status_code == 529
    assert isinstance(e, anthropic.OverloadedError), type(e)


@check("500 -> InternalServerError")
def _():
    expect_error(anthropic.InternalServerError, lambda: create("a-500"))


@check("wrong key -> AuthenticationError")
def _():
    expect_error(anthropic.AuthenticationError,
                 lambda: anthropic.Anthropic(base_url=f"{ROOT}/ok-anthropic", api_key="bad", max_retries=0)
                 .messages.create(model=MODEL, max_tokens=10, messages=MSG))


@check("400 -> BadRequestError")
def _():
    expect_error(anthropic.BadRequestError, lambda: create("a-400"))


@check("prompt too long -> BadRequestError")
def _():
    e = expect_error(anthropic.BadRequestError, lambda: create("a-ctx"))
    assert "prompt is too long" in str(e), str(e)


@check("reset -> APIConnectionError")
def _():
    expect_error(anthropic.APIConnectionError, lambda: create("a-reset"))


@check("cut stream -> error while iterating")
def _():
    try:
        for _ in create("a-cut", stream=True):
            pass
    except Exception as e:  # noqa: BLE001
        print(f"     (cut surfaced as {type(e).__name__})")
        return
    raise AssertionError("a cut stream ended cleanly")


@check("messages.count_tokens")
def _():
    r = client("ok-anthropic").messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Count these words, please."}]
    )
    assert r.input_tokens > 3, r


if failures:
    print(f"FAILED: {len(failures)} check(s): {', '.join(failures)}")
    sys.exit(1)
print("all anthropic checks passed")
