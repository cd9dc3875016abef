"""LangChain's ChatOpenAI and ChatAnthropic through `keel serve` (driven by tests/compat.rs).

    python langchain_suite.py <keel-url> <chaos-url>

Routes as in suite.mjs: gpt-4o-mini (flaky OpenAI, then Anthropic), claude-sonnet-4-6
(flaky Anthropic, then OpenAI), and one provider each for the cross routes. The answers
are checked against what `keel chaos` says: text in its words and sentence shape, tool
arguments and structured output valid for their schemas.
"""

import json
import re
import sys

from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

keel = sys.argv[1]

LOREM = set(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse "
    "cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui "
    "officia deserunt mollit anim id est laborum keel harbor tide anchor".split()
)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WEATHER = {
    "title": "weather",
    "description": "The weather in a city",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        # No numeric range: the Anthropic SDKs move it into the description,
        # which only a real model follows, not the chaos provider.
        "temperature": {"type": "integer"},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain"]},
    },
    "required": ["city", "temperature", "conditions"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


class CheckError(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckError(message)


def text_of(message):
    content = message.content
    if isinstance(content, list):
        content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return content


def check_lorem(text, what="text"):
    expect(isinstance(text, str) and text, f"{what} is empty: {text!r}")
    words = text.split(" ")
    expect(len(words) <= 48, f"{what} has {len(words)} words (a chaos answer has at most 48): {text}")
    for w in words:
        expect(w.rstrip(".").lower() in LOREM, f"{what} has {w!r}, not a chaos word: {text}")
    expect(re.match(r"^[A-Z]", text) and text.endswith("."), f"{what} is not chaos's sentence shape: {text}")


def check_weather(obj):
    expect(isinstance(obj, dict), f"structured output is not an object: {obj!r}")
    expect(set(obj) == {"city", "temperature", "conditions"}, f"structured output keys: {obj!r}")
    expect(isinstance(obj["city"], str), f"city: {obj!r}")
    expect(isinstance(obj["temperature"], int), f"temperature: {obj!r}")
    expect(obj["conditions"] in ("sunny", "cloudy", "rain"), f"conditions: {obj!r}")


def case_plain(llm):
    check_lorem(text_of(llm.invoke("Hello there")))


def case_stream(llm):
    text = ""
    for chunk in llm.stream("Stream please"):
        text += text_of(chunk)
    check_lorem(text)


def case_multi_turn(llm):
    m = llm.invoke(
        [
            SystemMessage("You are a terse harbor master."),
            HumanMessage("When is high tide?"),
            AIMessage("At noon."),
            HumanMessage("And low tide?"),
        ]
    )
    check_lorem(text_of(m))


def case_tools(llm):
    with_tools = llm.bind_tools([TOOL])
    messages = [HumanMessage("Use get_weather to look up the weather in Paris.")]
    first = with_tools.invoke(messages)
    expect(len(first.tool_calls) == 1, f"{len(first.tool_calls)} tool calls, expected 1: {first!r}")
    call = first.tool_calls[0]
    expect(call["name"] == "get_weather", f"called {call['name']}")
    args = call["args"]
    expect(
        set(args) == {"city", "unit"} and isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit"),
        f"tool arguments {args!r} do not match the schema",
    )
    messages += [first, ToolMessage('{"temperature": 21, "conditions": "sunny"}', tool_call_id=call["id"])]
    check_lorem(text_of(with_tools.invoke(messages)), "answer to the tool result")


def case_image(llm):
    m = llm.invoke(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ]
            )
        ]
    )
    check_lorem(text_of(m))


def case_json(llm):
    out = llm.with_structured_output(WEATHER, method="json_schema").invoke("The weather in Paris, as JSON.")
    check_weather(out)


def case_max_tokens_5(llm):
    """The client's own limit: the answer stops there (finish `length`), not continued."""
    m = llm.invoke("Cut me short")
    text = text_of(m)
    words = text.split(" ")
    expect(
        len(words) <= 5 and all(w.rstrip(".").lower() in LOREM for w in words),
        f"answer {text!r} is not at most 5 chaos words",
    )
    meta = m.response_metadata
    finish = meta.get("finish_reason") or meta.get("stop_reason")
    expect(finish in ("length", "max_tokens"), f"finish reason {finish!r}, expected length / max_tokens")


def client(kind, model, max_tokens=1000):
    if kind == "openai":
        return ChatOpenAI(model=model, base_url=keel + "/v1", api_key="client-key", max_retries=0, max_tokens=max_tokens)
    return ChatAnthropic(model=model, base_url=keel, api_key="client-key", max_retries=0, max_tokens=max_tokens)


CASES = {
    "plain": case_plain,
    "stream": case_stream,
    "multi-turn": case_multi_turn,
    "tools": case_tools,
    "image": case_image,
    "json": case_json,
}
ROWS = [
    ("langchain-openai (gpt-4o-mini: flaky OpenAI, then Anthropic)", "openai", "gpt-4o-mini", 16384),
    ("langchain-openai (gpt-4o-mini-on-claude: Anthropic-backed)", "openai", "gpt-4o-mini-on-claude", 16384),
    ("langchain-anthropic (claude-sonnet-4-6: flaky Anthropic, then OpenAI)", "anthropic", "claude-sonnet-4-6", 128000),
    ("langchain-anthropic (claude-sonnet-4-6-on-gpt: OpenAI-backed)", "anthropic", "claude-sonnet-4-6-on-gpt", 128000),
]
COLUMNS = list(CASES) + ["max-tokens-5", "large-max-tokens"]


def describe(e):
    if isinstance(e, CheckError):
        return str(e)
    body = getattr(e, "body", None)
    return f"{type(e).__name__}: {str(e).splitlines()[0][:240]}" + (f" {json.dumps(body)[:200]}" if body and str(body) not in str(e) else "")


table = []
results = []
for name, kind, model, large in ROWS:
    cells = []
    for case in COLUMNS:
        try:
            if case == "large-max-tokens":
                case_plain(client(kind, model, max_tokens=large))
            elif case == "max-tokens-5":
                case_max_tokens_5(client(kind, model, max_tokens=5))
            else:
                CASES[case](client(kind, model))
            cells.append("pass")
            results.append(f"ok   {name} / {case}")
        except Exception as e:  # noqa: BLE001 - every failure is reported in the table
            cells.append("**FAIL**")
            results.append(f"FAIL {name} / {case}: {describe(e)}")
    table.append(f"| {name} | {' | '.join(cells)} |")

print(f"| client (route) | {' | '.join(COLUMNS)} |")
print("|" + " --- |" * (len(COLUMNS) + 1))
print("\n".join(table))
print()
print("\n".join(sorted(results, key=lambda r: r.startswith("FAIL"))))
failed = sum(r.startswith("FAIL") for r in results)
print(f"\nlangchain compat suite: {len(results)} cases, {failed} failed")
sys.exit(1 if failed else 0)
