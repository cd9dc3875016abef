"""The official boto3 `bedrock-runtime` client against keel-chaos.

Usage: bedrock_boto3.py ROOT_URL. Upstreams are set up by tests/bedrock.rs.
botocore's own retries are off, so each call is exactly one attempt.
Prints one line per check; exits non-zero with FAIL lines on any failure.
"""
import json
import sys
import traceback

import boto3
import botocore.exceptions
from botocore.config import Config

ROOT = sys.argv[1]
failures = []
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSG = [{"role": "user", "content": [{"text": "Say something."}]}]
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "inputSchema": {"json": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
        }},
    }
}


def client(upstream, key="AKIDCHAOSGOOD", read_timeout=10):
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=f"{ROOT}/{upstream}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="chaos-secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout, connect_timeout=5),
    )


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
        raise AssertionError(f"expected {exc_type}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc_type}, got a success")


def converse(upstream, **kw):
    args = dict(modelId=MODEL, messages=MSG, inferenceConfig={"maxTokens": 256})
    args.update(kw)
    return client(upstream).converse(**args)


def converse_stream(upstream, **kw):
    args = dict(modelId=MODEL, messages=MSG, inferenceConfig={"maxTokens": 256})
    args.update(kw)
    return client(upstream).converse_stream(**args)


def read_stream(resp):
    """The events of a ConverseStream, in order, as (name, body) pairs."""
    return [(name, body) for event in resp["stream"] for name, body in event.items()]


@check("plain converse")
def _():
    r = converse("ok")
    msg = r["output"]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"][0]["text"]
    assert r["stopReason"] == "end_turn", r["stopReason"]
    u = r["usage"]
    assert u["inputTokens"] > 0 and u["outputTokens"] > 0
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


@check("system prompt and inference config")
def _():
    r = converse("ok", system=[{"text": "Be brief."}],
                 inferenceConfig={"maxTokens": 3, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\n\n"]})
    assert r["stopReason"] == "max_tokens", r["stopReason"]


@check("stream")
def _():
    events = read_stream(converse_stream("ok"))
    names = [n for n, _ in events]
    assert names[0] == "messageStart" and events[0][1]["role"] == "assistant", names
    assert names[-2:] == ["messageStop", "metadata"], names
    text = "".join(b["delta"]["text"] for n, b in events if n == "contentBlockDelta")
    assert text
    assert events[-2][1]["stopReason"] == "end_turn"
    assert events[-1][1]["usage"]["outputTokens"] > 0
    # The same conversation says the same thing, streamed or not.
    plain = converse("ok")["output"]["message"]["content"][0]["text"]
    assert plain == text, (plain, text)


@check("tool use")
def _():
    r = converse("ok", toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}})
    assert r["stopReason"] == "tool_use", r["stopReason"]
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert use["name"] == "get_weather" and use["toolUseId"].startswith("tooluse_")
    assert isinstance(use["input"]["city"], str) and isinstance(use["input"]["celsius"], bool)
    # The result goes back as a toolResult block.
    follow = MSG + [
        {"role": "assistant", "content": [{"toolUse": use}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"temp": 21}}]}}]},
    ]
    r = converse("ok", messages=follow, toolConfig={"tools": [WEATHER]})
    assert r["stopReason"] == "end_turn" and r["output"]["message"]["content"][0]["text"]


@check("tool use, streamed")
def _():
    events = read_stream(converse_stream("ok", toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}}))
    start = next(b for n, b in events if n == "contentBlockStart")
    assert start["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(b["delta"]["toolUse"]["input"] for n, b in events if n == "contentBlockDelta")
    assert set(json.loads(args)) == {"city", "celsius"}, args
    assert next(b for n, b in events if n == "messageStop")["stopReason"] == "tool_use"


def client_error(upstream, code, status, fn=None):
    c = client(upstream)
    call = fn or (lambda: c.converse(modelId=MODEL, messages=MSG))
    e = expect_error(botocore.exceptions.ClientError, call)
    err = e.response["Error"]
    assert err["Code"] == code, (err, code)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == status, e.response["ResponseMetadata"]
    assert err["Message"], err
    return e, c


@check("429 ThrottlingException is boto3's own exception")
def _():
    e, c = client_error("b-429", "ThrottlingException", 429)
    assert isinstance(e, c.exceptions.ThrottlingException)


@check("quota ServiceQuotaExceededException")
def _():
    e, c = client_error("b-quota", "ServiceQuotaExceededException", 400)
    assert isinstance(e, c.exceptions.ServiceQuotaExceededException)


@check("503 ServiceUnavailableException")
def _():
    e, c = client_error("b-503", "ServiceUnavailableException", 503)
    assert isinstance(e, c.exceptions.ServiceUnavailableException)


@check("500 InternalServerException")
def _():
    e, c = client_error("b-500", "InternalServerException", 500)
    assert isinstance(e, c.exceptions.InternalServerException)


@check("400 ValidationException")
def _():
    e, c = client_error("b-400", "ValidationException", 400)
    assert isinstance(e, c.exceptions.ValidationException)


@check("context overflow is a ValidationException saying the input is too long")
def _():
    e, _ = client_error("b-ctx", "ValidationException", 400)
    assert "too long" in e.response["Error"]["Message"], e.response["Error"]


@check("404 ResourceNotFoundException")
def _():
    e, c = client_error("b-404", "ResourceNotFoundException", 404)
    assert isinstance(e, c.exceptions.ResourceNotFoundException)


@check("408 ModelTimeoutException")
def _():
    e, c = client_error("b-408", "ModelTimeoutException", 408)
    assert isinstance(e, c.exceptions.ModelTimeoutException)


@check("a wrong access key is refused")
def _():
    c = client("ok", key="AKIDWRONG")
    e = expect_error(botocore.exceptions.ClientError, lambda: c.converse(modelId=MODEL, messages=MSG))
    assert e.response["Error"]["Code"] == "UnrecognizedClientException", e.response["Error"]
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@check("stream errors before the stream are boto3's exceptions too")
def _():
    c = client("b-429")
    e = expect_error(c.exceptions.ThrottlingException,
                     lambda: c.converse_stream(modelId=MODEL, messages=MSG))
    assert e.response["Error"]["Code"] == "ThrottlingException"


@check("truncation is stopReason max_tokens")
def _():
    assert converse("b-trunc")["stopReason"] == "max_tokens"
    events = read_stream(converse_stream("b-trunc"))
    assert next(b for n, b in events if n == "messageStop")["stopReason"] == "max_tokens"


@check("content filter is stopReason guardrail_intervened")
def _():
    assert converse("b-filter")["stopReason"] == "guardrail_intervened"
    events = read_stream(converse_stream("b-filter"))
    assert next(b for n, b in events if n == "messageStop")["stopReason"] == "guardrail_intervened"


@check("a stream exception event raises the event's error")
def _():
    resp = converse_stream("b-serr")
    seen = []

    def read():
        for event in resp["stream"]:
            seen.append(event)
    e = expect_error(botocore.exceptions.EventStreamError, read)
    assert e.response["Error"]["Code"] == "serviceUnavailableException", e.response["Error"]
    assert "unable to process" in e.response["Error"]["Message"], e.response["Error"]
    assert seen and "messageStart" in seen[0], seen


@check("a cut stream fails the reading")
def _():
    resp = converse_stream("b-cut")

    def read():
        for _ in resp["stream"]:
            pass
    expect_error(Exception, read)


@check("a hang is the client's read timeout")
def _():
    c = client("b-hang", read_timeout=1)
    expect_error(botocore.exceptions.ReadTimeoutError,
                 lambda: c.converse(modelId=MODEL, messages=MSG))


if failures:
    print(f"{len(failures)} FAILED: {failures}")
    sys.exit(1)
print("all ok")
