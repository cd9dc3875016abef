"""The official openai SDK's AzureOpenAI client against keel-chaos' azure
dialect. Usage: azure_sdk.py ROOT_URL

ROOT_URL is http://127.0.0.1:PORT; upstreams are set up by tests/sdk_azure.rs.
Each azure upstream's resource endpoint is ROOT_URL/NAME. Prints one line per
check; exits non-zero with FAIL lines on any failure.
"""
import json
import sys
import traceback

import httpx
import openai

ROOT = sys.argv[1]
KEY = "azure-chaos-key"
failures = []


def azure(upstream, key=KEY, version="2024-10-21", timeout=10, **kw):
    """AzureOpenAI at a dated API version: /openai/deployments/{model}/...?api-version=..."""
    if "azure_ad_token" not in kw:
        kw["api_key"] = key
    return openai.AzureOpenAI(azure_endpoint=f"{ROOT}/{upstream}", api_version=version,
                              max_retries=0, timeout=timeout, **kw)


def v1(upstream, key=KEY):
    """Azure's v1 API, reached with the plain OpenAI client as Azure documents it."""
    return openai.OpenAI(base_url=f"{ROOT}/{upstream}/openai/v1/", api_key=key, max_retries=0, timeout=10)


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
DEP = "gpt4o-prod"
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


@check("plain chat, dated api-version (deployment in the path)")
def _():
    raw = azure("ok-azure").chat.completions.with_raw_response.create(model=DEP, messages=MSG)
    assert raw.http_request.url.path == f"/ok-azure/openai/deployments/{DEP}/chat/completions", raw.http_request.url
    assert raw.http_request.url.params["api-version"] == "2024-10-21"
    assert raw.http_request.headers["api-key"] == KEY
    assert raw.headers["apim-request-id"]
    r = raw.parse()
    assert r.id.startswith("chatcmpl-") and r.model == DEP, (r.id, r.model)
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop", r
    assert r.model_extra["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert r.choices[0].model_extra["content_filter_results"]["violence"]["severity"] == "safe"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check("Entra ID token as Bearer")
def _():
    r = azure("ok-azure", azure_ad_token=KEY).chat.completions.create(model=DEP, messages=MSG)
    assert r.choices[0].message.content


@check("streaming chat: prompt filter event first, usage last")
def _():
    stream = azure("ok-azure").chat.completions.create(
        model=DEP, messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices == [] and chunks[0].model_extra["prompt_filter_results"], chunks[0]
    text = "".join(c.delta.content or "" for ch in chunks for c in ch.choices)
    finish = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    assert text and finish == ["stop"], (text, finish)
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0


@check("stream helper accumulates")
def _():
    with azure("ok-azure").chat.completions.stream(model=DEP, messages=MSG) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content


@check("tool call, plain and streamed")
def _():
    r = azure("ok-azure").chat.completions.create(model=DEP, messages=MSG, tools=[TOOL], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["unit"] in ("c", "f")
    with azure("ok-azure").chat.completions.stream(model=DEP, messages=MSG, tools=[TOOL],
                                                   tool_choice="required") as s:
        final = s.get_final_completion()
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments)["city"]


@check("json_schema response_format")
def _():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = azure("ok-azure").chat.completions.create(
        model=DEP, messages=MSG,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}},
    )
    v = json.loads(r.choices[0].message.content)
    assert isinstance(v["name"], str) and isinstance(v["age"], int), v


@check("embeddings, dated and v1")
def _():
    one = azure("ok-azure").embeddings.create(model="emb-small", input="hello", encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 1536
    many = v1("ok-azure").embeddings.create(model="emb-small", input=["a", "hello"])
    assert [d.index for d in many.data] == [0, 1]
    assert all(abs(x - y) < 1e-6 for x, y in zip(many.data[1].embedding, one.data[0].embedding))


@check("v1 API: plain, stream, tools with the OpenAI client (model in the body)")
def _():
    raw = v1("ok-azure").chat.completions.with_raw_response.create(model=DEP, messages=MSG)
    assert raw.http_request.url.path == "/ok-azure/openai/v1/chat/completions"
    assert "api-version" not in raw.http_request.url.params
    assert raw.parse().model == DEP
    text = "".join(c.delta.content or "" for ch in v1("ok-azure").chat.completions.create(
        model=DEP, messages=MSG, stream=True) for c in ch.choices)
    assert text
    r = v1("ok-azure").chat.completions.create(model=DEP, messages=MSG, tools=[TOOL], tool_choice="required")
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert "gpt-4o" in [m.id for m in v1("ok-azure").models.list()]


@check("no api-version -> 404 Resource not found; unknown one -> 400")
def _():
    url = f"{ROOT}/ok-azure/openai/deployments/{DEP}/chat/completions"
    body = {"messages": MSG}
    r = httpx.post(url, json=body, headers={"api-key": KEY})
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}, r.text
    r = httpx.post(url, params={"api-version": "yesterday"}, json=body, headers={"api-key": KEY})
    assert r.status_code == 400 and r.json()["error"]["message"] == "API version not supported", r.text
    # A deployment path without `model` in the body: the path names it.
    r = httpx.post(url, params={"api-version": "2024-10-21"}, json=body, headers={"api-key": KEY})
    assert r.status_code == 200 and r.json()["model"] == DEP, r.text


@check("wrong key -> AuthenticationError (Azure's 401)")
def _():
    e = expect_error(openai.AuthenticationError,
                     lambda: azure("ok-azure", key="wrong").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "401" and "Access denied" in e.message, (e.code, e.message)


@check("429 -> RateLimitError with retry-after-ms")
def _():
    e = expect_error(openai.RateLimitError, lambda: azure("z-429").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "429", e.code
    assert e.response.headers["retry-after-ms"] == "1500" and e.response.headers["retry-after"] == "2"
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0"


@check("SDK retries after retry-after-ms and then succeeds")
def _():
    c = openai.AzureOpenAI(azure_endpoint=f"{ROOT}/z-429-once", api_version="2024-10-21", api_key=KEY,
                           max_retries=1, timeout=10)
    assert c.chat.completions.create(model=DEP, messages=MSG).choices[0].message.content


@check("quota -> RateLimitError insufficient_quota")
def _():
    e = expect_error(openai.RateLimitError, lambda: azure("z-quota").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "insufficient_quota", e.code


@check("prompt filtered -> BadRequestError content_filter with innererror")
def _():
    e = expect_error(openai.BadRequestError, lambda: azure("z-filter").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "content_filter" and e.param == "prompt", (e.code, e.param)
    inner = e.body["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation" and inner["content_filter_result"]["hate"]["filtered"]


@check("completion filtered -> finish_reason content_filter, plain and streamed")
def _():
    r = azure("z-cf").chat.completions.create(model=DEP, messages=MSG)
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].model_extra["content_filter_results"]["violence"]["filtered"] is True
    chunks = list(azure("z-cf").chat.completions.create(model=DEP, messages=MSG, stream=True))
    last = [c for ch in chunks for c in ch.choices if c.finish_reason][-1]
    assert last.finish_reason == "content_filter" and last.model_extra["content_filter_results"]["violence"]["filtered"]


@check("context overflow -> BadRequestError context_length_exceeded")
def _():
    e = expect_error(openai.BadRequestError, lambda: azure("z-ctx").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "context_length_exceeded", e.code


@check("400 -> BadRequestError")
def _():
    expect_error(openai.BadRequestError, lambda: azure("z-400").chat.completions.create(model=DEP, messages=MSG))


@check("unknown deployment -> NotFoundError DeploymentNotFound")
def _():
    e = expect_error(openai.NotFoundError, lambda: azure("z-404").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "DeploymentNotFound", e.code


@check("408 -> APIStatusError Timeout")
def _():
    e = expect_error(openai.APIStatusError, lambda: azure("z-408").chat.completions.create(model=DEP, messages=MSG))
    assert e.status_code == 408 and e.code == "Timeout", (e.status_code, e.code)


@check("500 -> InternalServerError")
def _():
    e = expect_error(openai.InternalServerError, lambda: azure("z-500").chat.completions.create(model=DEP, messages=MSG))
    assert e.code == "InternalServerError", e.code


@check("503 -> InternalServerError ServiceUnavailable")
def _():
    e = expect_error(openai.InternalServerError, lambda: azure("z-503").chat.completions.create(model=DEP, messages=MSG))
    assert e.status_code == 503 and e.code == "ServiceUnavailable", (e.status_code, e.code)


@check("hang -> APITimeoutError")
def _():
    expect_error(openai.APITimeoutError,
                 lambda: azure("z-hang", timeout=0.5).chat.completions.create(model=DEP, messages=MSG))


@check("reset -> APIConnectionError")
def _():
    expect_error(openai.APIConnectionError, lambda: azure("z-reset").chat.completions.create(model=DEP, messages=MSG))


@check("stream error event -> APIError while iterating")
def _():
    stream = azure("z-stream-error").chat.completions.create(model=DEP, messages=MSG, stream=True)
    e = expect_error(openai.APIError, lambda: list(stream))
    assert "temporarily unable" in e.message, e.message


@check("cut stream -> error while iterating")
def _():
    stream = azure("z-cut").chat.completions.create(model=DEP, messages=MSG, stream=True)
    try:
        for _ in stream:
            pass
    except Exception as e:  # noqa: BLE001 - any error is the point
        print(f"     (cut surfaced as {type(e).__name__})")
        return
    raise AssertionError("a cut stream ended cleanly")


if failures:
    print(f"FAILED: {len(failures)} check(s): {', '.join(failures)}")
    sys.exit(1)
print("all azure checks passed")
