"""The client's own timeout, as the official SDKs send it, bounds Keel's work.

Route `slow`: its first deployment hangs and its second answers after 30 s.
Each SDK client has a 3 s timeout and no retries: Keel must answer (here with
its error listing the attempts) before the SDK gives up, so the SDK raises
Keel's 504 as an API status error, never its own timeout.
"""
import sys
import time

import anthropic
import openai

from checks import check, conclude

base = sys.argv[1]


def status_of(call):
    """The HTTP status the SDK raised, or the name of its own exception."""
    t0 = time.monotonic()
    try:
        call()
        return "answered", time.monotonic() - t0
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        return e.status_code, time.monotonic() - t0
    except Exception as e:  # the SDK's own timeout, or anything else
        return type(e).__name__, time.monotonic() - t0


oa = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0, timeout=3.0)
an = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0, timeout=3.0)
msgs = [{"role": "user", "content": "Hello"}]


def oa_stream():
    with oa.chat.completions.create(model="slow", messages=msgs, max_tokens=20, stream=True) as s:
        for _ in s:
            pass


def an_stream():
    with an.messages.stream(model="slow", messages=msgs, max_tokens=20) as s:
        for _ in s:
            pass


cases = {
    "openai plain": lambda: oa.chat.completions.create(model="slow", messages=msgs, max_tokens=20),
    "openai stream": oa_stream,
    "anthropic plain": lambda: an.messages.create(model="slow", messages=msgs, max_tokens=20),
    "anthropic stream": an_stream,
}
for name, call in cases.items():
    got, took = status_of(call)
    check(f"{name}: Keel's 504 before the client's timeout", got == 504, f"got {got!r} after {took:.2f} s")

conclude("all client deadline checks passed")
