"""The `openai-agents` package through Keel: an agent with two function tools, ten runs,
with faults on the primary deployment (route gpt, see tests/responses_native.rs).
The last line is FACTS {json}: how many model calls the runs made.
"""
import asyncio
import json
import sys

from openai import AsyncOpenAI
from agents import (
    Agent, OpenAIResponsesModel, Runner, function_tool, set_default_openai_client, set_tracing_disabled,
)

base = sys.argv[1]
client = AsyncOpenAI(base_url=base + "/v1", api_key="client-key", max_retries=0)
set_default_openai_client(client, use_for_tracing=False)
set_tracing_disabled(True)

called = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    called.append(("get_weather", city))
    return f"sunny in {city}"


@function_tool
def get_time(city: str) -> str:
    """The local time in a city."""
    called.append(("get_time", city))
    return f"noon in {city}"


agent = Agent(
    name="helper",
    instructions="Answer with the tools.",
    tools=[get_weather, get_time],
    model=OpenAIResponsesModel(model="gpt", openai_client=client),
)


async def main():
    failures, calls = [], 0
    for i in range(10):
        tool = "get_weather" if i % 2 == 0 else "get_time"
        try:
            result = await Runner.run(agent, f"Use {tool} for Paris (run {i})")
        except Exception as e:  # noqa: BLE001 - every run must complete; say why one did not
            failures.append(f"run {i}: {e!r}")
            continue
        calls += len(result.raw_responses)
        ok = isinstance(result.final_output, str) and result.final_output != "" and called and called[-1][0] == tool
        print(("ok  " if ok else "FAIL") + f" run {i}: {len(result.raw_responses)} model calls, tool {called[-1:]}")
        if not ok:
            failures.append(f"run {i}: {result.final_output!r} {called[-1:]}")
    if failures:
        print(f"{len(failures)} failed: {failures}")
        sys.exit(1)
    print("FACTS " + json.dumps({"model_calls": calls, "tool_calls": len(called)}))


asyncio.run(main())
