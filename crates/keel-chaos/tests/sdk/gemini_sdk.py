"""The official google-genai SDK against keel-chaos. Usage: gemini_sdk.py ROOT_URL

ROOT_URL is http://127.0.0.1:PORT; upstreams are set up by tests/sdk.rs.
Prints one line per check; exits non-zero with FAIL lines on any failure.
"""
import json
import sys
import traceback

from google import genai
from google.genai import errors, types

ROOT = sys.argv[1]
failures = []
MODEL = "gemini-2.5-flash"


CLIENTS = {}


def client(upstream, key="chaos-gemini-good"):
    # Kept: a google-genai client closes its HTTP client when collected.
    if (upstream, key) not in CLIENTS:
        CLIENTS[(upstream, key)] = genai.Client(
            api_key=key,
            http_options=types.HttpOptions(base_url=f"{ROOT}/{upstream}", timeout=10_000),
        )
    return CLIENTS[(upstream, key)]


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


def generate(upstream, contents="Say something.", **config):
    cfg = types.GenerateContentConfig(**config) if config else None
    return client(upstream).models.generate_content(model=MODEL, contents=contents, config=cfg)


def stream(upstream, contents="Say something.", **config):
    cfg = types.GenerateContentConfig(**config) if config else None
    return list(client(upstream).models.generate_content_stream(model=MODEL, contents=contents, config=cfg))


@check("plain generateContent")
def _():
    r = generate("ok-gemini")
    assert r.text, r
    assert r.candidates[0].finish_reason == types.FinishReason.STOP, r.candidates[0].finish_reason
    assert r.candidates[0].content.role == "model"
    u = r.usage_metadata
    assert u.prompt_token_count > 0 and u.candidates_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.model_version == MODEL and r.response_id


@check("same request, same answer")
def _():
    assert generate("ok-gemini").text == generate("ok-gemini").text


@check("system instruction and multi-turn contents")
def _():
    r = generate(
        "ok-gemini",
        contents=[
            types.Content(role="user", parts=[types.Part(text="Hi")]),
            types.Content(role="model", parts=[types.Part(text="Hello!")]),
            types.Content(role="user", parts=[types.Part(text="Tell me more.")]),
        ],
        system_instruction="Be brief.",
        temperature=0.2,
    )
    assert r.text


@check("streamGenerateContent")
def _():
    chunks = stream("ok-gemini")
    assert len(chunks) > 2, len(chunks)
    text = "".join(c.text or "" for c in chunks)
    assert text == generate("ok-gemini").text, "stream and plain answers differ"
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.candidates_token_count > 0


WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city.",
    parameters=types.Schema(
        type="OBJECT",
        properties={"city": types.Schema(type="STRING"), "days": types.Schema(type="INTEGER")},
        required=["city", "days"],
    ),
)])
ANY = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))


@check("function calling")
def _():
    r = generate("ok-gemini", contents="What is the weather in Paris?", tools=[WEATHER], tool_config=ANY)
    calls = r.function_calls
    assert calls and calls[0].name == "get_weather", r
    assert isinstance(calls[0].args["city"], str) and isinstance(calls[0].args["days"], int), calls[0].args


@check("function calling, streamed")
def _():
    chunks = stream("ok-gemini", contents="Weather in Paris?", tools=[WEATHER], tool_config=ANY)
    calls = [c for ch in chunks for c in (ch.function_calls or [])]
    assert len(calls) == 1 and calls[0].name == "get_weather", calls


@check("function response turn")
def _():
    r = generate(
        "ok-gemini",
        contents=[
            types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
            types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris", "days": 1}))]),
            types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(name="get_weather", response={"temp": 21}))]),
        ],
        tools=[WEATHER],
    )
    assert r.text and not r.function_calls


@check("JSON schema output")
def _():
    schema = types.Schema(type="OBJECT", properties={"name": types.Schema(type="STRING"), "age": types.Schema(type="INTEGER")}, required=["name", "age"])
    r = generate("ok-gemini", response_mime_type="application/json", response_schema=schema)
    doc = json.loads(r.text)
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int), doc


@check("models list")
def _():
    names = [m.name for m in client("ok-gemini").models.list()]
    assert "models/gemini-2.5-flash" in names, names


def status_error(upstream, exc, code, status, streamed=False):
    e = expect_error(exc, lambda: stream(upstream) if streamed else generate(upstream))
    assert e.code == code, (e.code, e)
    assert e.status == status, (e.status, e)
    return e


@check("wrong key: ClientError 400 API_KEY_INVALID")
def _():
    e = expect_error(errors.ClientError, lambda: client("ok-gemini", key="wrong").models.generate_content(model=MODEL, contents="x"))
    assert e.code == 400 and e.status == "INVALID_ARGUMENT", e
    assert e.details["error"]["details"][0]["reason"] == "API_KEY_INVALID", e.details


@check("429 RESOURCE_EXHAUSTED with RetryInfo")
def _():
    e = status_error("g-429", errors.ClientError, 429, "RESOURCE_EXHAUSTED")
    info = [d for d in e.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert info and info[0]["retryDelay"] == "0.250s", e.details


@check("429 RESOURCE_EXHAUSTED, streamed")
def _():
    status_error("g-429", errors.ClientError, 429, "RESOURCE_EXHAUSTED", streamed=True)


@check("daily quota: 429 naming a per-day quota")
def _():
    e = status_error("g-quota", errors.ClientError, 429, "RESOURCE_EXHAUSTED")
    quota = [d for d in e.details["error"]["details"] if d["@type"].endswith("QuotaFailure")]
    assert "PerDay" in quota[0]["violations"][0]["quotaId"], quota


@check("503 UNAVAILABLE: ServerError")
def _():
    status_error("g-503", errors.ServerError, 503, "UNAVAILABLE")


@check("500 INTERNAL: ServerError")
def _():
    status_error("g-500", errors.ServerError, 500, "INTERNAL")


@check("504 DEADLINE_EXCEEDED: ServerError")
def _():
    status_error("g-504", errors.ServerError, 504, "DEADLINE_EXCEEDED")


@check("context overflow: 400 INVALID_ARGUMENT")
def _():
    e = status_error("g-ctx", errors.ClientError, 400, "INVALID_ARGUMENT")
    assert "exceeds the maximum number of tokens" in e.message, e.message


@check("bad request: 400 INVALID_ARGUMENT")
def _():
    status_error("g-400", errors.ClientError, 400, "INVALID_ARGUMENT")


@check("unknown model: 404 NOT_FOUND")
def _():
    status_error("g-404", errors.ClientError, 404, "NOT_FOUND")


@check("MAX_TOKENS finish")
def _():
    r = generate("g-trunc")
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS, r.candidates[0].finish_reason
    assert r.text


@check("content filter: finishReason SAFETY")
def _():
    r = generate("g-filter")
    c = r.candidates[0]
    assert c.finish_reason == types.FinishReason.SAFETY, c.finish_reason
    assert any(s.blocked for s in c.safety_ratings), c.safety_ratings
    chunks = stream("g-filter")
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.SAFETY


@check("refusal: promptFeedback.blockReason")
def _():
    r = generate("g-refusal")
    assert not r.candidates, r.candidates
    assert r.prompt_feedback.block_reason == types.BlockedReason.SAFETY, r.prompt_feedback
    chunks = stream("g-refusal")
    assert chunks[0].prompt_feedback.block_reason == types.BlockedReason.SAFETY


@check("stream error event mid-stream")
def _():
    e = expect_error(errors.APIError, lambda: stream("g-stream-error"))
    assert e.code == 503 and e.status == "UNAVAILABLE", e


@check("stream cut")
def _():
    expect_error(Exception, lambda: stream("g-cut"))


@check("connection reset")
def _():
    expect_error(Exception, lambda: generate("g-reset"))


EMBED = "gemini-embedding-001"


def embed(upstream, contents, **config):
    cfg = types.EmbedContentConfig(**config) if config else None
    return client(upstream).models.embed_content(model=EMBED, contents=contents, config=cfg)


@check("embed_content: one text")
def _():
    r = embed("ok-gemini", "The cat sat.")
    assert len(r.embeddings) == 1, r
    v = r.embeddings[0].values
    assert len(v) == 3072, len(v)
    assert abs(sum(x * x for x in v) - 1.0) < 1e-3, "not unit length"
    assert r.embeddings[0].values == embed("ok-gemini", "The cat sat.").embeddings[0].values, "not deterministic"


@check("embed_content: a batch, with output_dimensionality")
def _():
    r = embed("ok-gemini", ["one", "two", "three"], output_dimensionality=64)
    assert [len(e.values) for e in r.embeddings] == [64, 64, 64], r
    assert r.embeddings[0].values != r.embeddings[1].values
    one = embed("ok-gemini", "two", output_dimensionality=64)
    assert one.embeddings[0].values == r.embeddings[1].values, "batch and single vectors differ"


@check("embed_content: dimensionality out of range is a ClientError 400")
def _():
    e = expect_error(errors.ClientError, lambda: embed("ok-gemini", "x", output_dimensionality=5000))
    assert e.code == 400 and e.status == "INVALID_ARGUMENT", e
    assert "output_dimensionality" in e.message, e.message


@check("embed_content: 429 RESOURCE_EXHAUSTED / 503 UNAVAILABLE as the SDK's exceptions")
def _():
    e = expect_error(errors.ClientError, lambda: embed("g-429", "x"))
    assert e.code == 429 and e.status == "RESOURCE_EXHAUSTED", e
    e = expect_error(errors.ServerError, lambda: embed("g-503", ["x", "y"]))
    assert e.code == 503 and e.status == "UNAVAILABLE", e
    e = expect_error(errors.ClientError, lambda: client("ok-gemini", key="wrong").models.embed_content(model=EMBED, contents="x"))
    assert e.code == 400 and e.details["error"]["details"][0]["reason"] == "API_KEY_INVALID", e.details


@check("thought signatures: signed calls, sent back by the SDK, required when asked")
def _():
    ask = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])
    cfg = types.GenerateContentConfig(tools=[WEATHER], tool_config=ANY)
    r = client("g-sig").models.generate_content(model=MODEL, contents=[ask], config=cfg)
    part = r.candidates[0].content.parts[0]
    assert part.function_call and isinstance(part.thought_signature, bytes) and part.thought_signature, part
    result = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(name="get_weather", response={"temp": 21}))])
    # The SDK's own history (the model's content as it came) passes.
    ok = client("g-sig").models.generate_content(model=MODEL, contents=[ask, r.candidates[0].content, result], config=types.GenerateContentConfig(tools=[WEATHER]))
    assert ok.text, ok
    # Without the signature: Gemini 3's 400.
    bare = types.Content(role="model", parts=[types.Part(function_call=part.function_call)])
    e = expect_error(errors.ClientError, lambda: client("g-sig").models.generate_content(model=MODEL, contents=[ask, bare, result], config=types.GenerateContentConfig(tools=[WEATHER])))
    assert e.code == 400 and e.status == "INVALID_ARGUMENT", e
    assert "missing a thought_signature" in e.message, e.message


if failures:
    print(f"{len(failures)} FAILED: {failures}")
    sys.exit(1)
print("all gemini SDK checks passed")
