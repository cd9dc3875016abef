"""The official openai and anthropic SDKs against `keel serve`, unchanged but for base_url.

Routes (see tests/sdk.rs): gpt -> OpenAI deployment, claude -> Anthropic deployment,
gpt-x -> Anthropic deployment (an OpenAI client served by Anthropic), claude-x -> OpenAI
deployment (the reverse), flaky -> a failing OpenAI deployment then Anthropic.
"""
import sys

import anthropic
import openai

from checks import check, conclude

base = sys.argv[1]


oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0)

for route in ["gpt", "gpt-x", "flaky"]:
    r = oa.chat.completions.create(model=route, messages=[{"role": "user", "content": "Hello there"}], max_tokens=20)
    check(f"openai plain {route}", bool(r.choices[0].message.content) and r.model == route, repr(r))
    raw = oa.chat.completions.with_raw_response.create(model=route, messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
    check(f"openai headers {route}", raw.headers.get("x-keel-attempts") is not None, dict(raw.headers))
    parts = []
    finish = None
    with oa.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "Stream please"}], max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    parts.append(c.delta.content)
                if c.finish_reason:
                    finish = c.finish_reason
    check(f"openai stream {route}", "".join(parts) != "" and finish is not None, repr((parts, finish)))

for route in ["claude", "claude-x", "flaky"]:
    m = an.messages.create(model=route, max_tokens=20, messages=[{"role": "user", "content": "Hello there"}])
    check(f"anthropic plain {route}", m.content and m.content[0].type == "text" and m.content[0].text != "", repr(m))
    with an.messages.stream(model=route, max_tokens=20, messages=[{"role": "user", "content": "Stream please"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(f"anthropic stream {route}", text != "" and final.stop_reason is not None, repr((text, final)))

models = oa.models.list()
check("openai models.list", sorted(m.id for m in models.data) == ["claude", "claude-x", "dead", "flaky", "gpt", "gpt-x"], repr(models))

try:
    oa.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
    check("openai unknown route -> NotFoundError", False, "no exception")
except openai.NotFoundError as e:
    check("openai unknown route -> NotFoundError", "no-such-route" in str(e), str(e))

try:
    an.messages.create(model="dead", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check("anthropic dead route -> InternalServerError", False, "no exception")
except anthropic.InternalServerError as e:
    check("anthropic dead route -> InternalServerError", e.status_code in (502, 503, 529), str(e))

try:
    oa.chat.completions.create(model="dead", messages=[{"role": "user", "content": "x"}])
    check("openai dead route -> InternalServerError", False, "no exception")
except openai.InternalServerError as e:
    check("openai dead route -> InternalServerError", e.status_code in (502, 503), str(e))

conclude("all SDK checks passed")
