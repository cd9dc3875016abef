"""The official openai SDK's embeddings.create through Keel to a Gemini deployment.

Usage: gemini_embeddings_sdk.py KEEL_URL. Keel's route `gem` is served by
`kind = "gemini"` deployments (keel chaos speaking Gemini), `ref` by an OpenAI
upstream of the same model, whose vectors chaos makes the same way; set up by
tests/gemini_embeddings.rs. Prints one line per check; exits non-zero on any
failure.
"""
import base64
import struct
import sys
import traceback

import openai

KEEL = sys.argv[1]
failures = []
oa = openai.OpenAI(base_url=f"{KEEL}/v1", api_key="unused", max_retries=0, timeout=20)


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


def close(a, b):
    assert len(a) == len(b), (len(a), len(b))
    assert all(abs(x - y) < 1e-6 for x, y in zip(a, b)), "vectors differ"


@check("plain (the SDK's default base64, decoded by the SDK)")
def _():
    r = oa.embeddings.create(model="gem", input="The quick brown fox")
    assert r.object == "list" and r.model == "gem", r
    assert len(r.data) == 1 and r.data[0].index == 0
    v = r.data[0].embedding
    assert isinstance(v, list) and len(v) == 3072, type(v)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    ref = oa.embeddings.create(model="ref", input="The quick brown fox", encoding_format="float")
    close(v, ref.data[0].embedding)


@check("list input, in order")
def _():
    texts = ["first", "second", "third", "fourth"]
    r = oa.embeddings.create(model="gem", input=texts, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2, 3], [d.index for d in r.data]
    ref = oa.embeddings.create(model="ref", input=texts, encoding_format="float")
    for got, want in zip(r.data, ref.data):
        close(got.embedding, want.embedding)


@check("dimensions")
def _():
    r = oa.embeddings.create(model="gem", input=["a b", "c d"], dimensions=32, encoding_format="float")
    assert [len(d.embedding) for d in r.data] == [32, 32]


@check("base64 asked explicitly: little-endian float32")
def _():
    r = oa.embeddings.create(model="gem", input="xyz", dimensions=16, encoding_format="base64")
    raw = base64.b64decode(r.data[0].embedding)
    v = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    ref = oa.embeddings.create(model="ref", input="xyz", dimensions=16, encoding_format="float")
    close(v, ref.data[0].embedding)


if failures:
    print(f"{len(failures)} FAILED: {failures}")
    sys.exit(1)
print("all gemini embeddings SDK checks passed")
