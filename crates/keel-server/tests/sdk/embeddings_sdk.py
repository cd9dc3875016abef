"""The official openai SDK's embeddings.create and the anthropic SDK's
messages.count_tokens against `keel serve`, unchanged but for base_url.

Prints one JSON object (the answers seen) on its last line; the Rust test
(tests/embeddings.rs) compares the vectors with direct calls to chaos and
counts the attempts chaos saw.
"""
import base64
import json
import struct
import sys

import anthropic
import openai

base = sys.argv[1]
oa = openai.OpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0)
out = {}

# Single string, array, base64 (the SDK's default: it decodes it), dimensions.
r = oa.embeddings.create(model="emb", input="hello world", encoding_format="float")
out["single"] = {"model": r.model, "vectors": [d.embedding for d in r.data], "usage": r.usage.prompt_tokens}
raw = oa.embeddings.with_raw_response.create(model="emb", input=["alpha", "beta", "gamma"], encoding_format="float")
r = raw.parse()
out["array"] = {
    "indexes": [d.index for d in r.data],
    "vectors": [d.embedding for d in r.data],
    "usage": r.usage.prompt_tokens,
    "attempts": raw.headers.get("x-keel-attempts"),
    "deployment": raw.headers.get("x-keel-deployment"),
}
# Without encoding_format the SDK asks for base64 and decodes it itself.
r = oa.embeddings.create(model="emb", input=["alpha", "beta", "gamma"])
out["base64"] = [d.embedding for d in r.data]
# Asked for explicitly, the SDK hands the base64 text over as it came.
r = oa.embeddings.create(model="emb", input=[[1, 2, 3], [4, 5]], dimensions=8, encoding_format="base64")
out["dimensions"] = [
    list(struct.unpack(f"<{len(base64.b64decode(d.embedding)) // 4}f", base64.b64decode(d.embedding))) for d in r.data
]

# A chat route asked for embeddings: a 400 the SDK raises as BadRequestError.
try:
    oa.embeddings.create(model="chat", input="x")
    out["chat_route"] = "no error"
except openai.BadRequestError as e:
    out["chat_route"] = {"status": e.status_code, "message": e.body["message"]}
# An unknown path: a NotFoundError with a message, not a bare 404.
try:
    oa.files.list()
    out["files"] = "no error"
except openai.NotFoundError as e:
    out["files"] = e.body["message"]

# Token counting, through an Anthropic deployment and by Keel's estimate.
messages = [{"role": "user", "content": "Count the tokens of this sentence, please."}]
raw = an.messages.with_raw_response.count_tokens(model="claude", messages=messages)
out["count"] = {"tokens": raw.parse().input_tokens, "estimated": raw.headers.get("x-keel-estimated")}
raw = an.messages.with_raw_response.count_tokens(model="chat", messages=messages)
out["estimate"] = {"tokens": raw.parse().input_tokens, "estimated": raw.headers.get("x-keel-estimated")}

print(json.dumps(out))
