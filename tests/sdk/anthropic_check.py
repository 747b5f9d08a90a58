#!/usr/bin/env python3
"""Drive the relay's Anthropic Messages API with the official Anthropic Python SDK, used as
its users use it, and check what comes back: messages.create, messages.stream (text and the
final message), a tool_use answer and a tool_result turn (plain and streamed), and
count_tokens; the key is sent both as x-api-key and as a bearer token.

    anthropic_check.py --base-url http://127.0.0.1:8080 --api-key sk-... --model claude-x \
        --prompt "Hello there" --expect-reply "Hello from ...: Hello there" \
        [--tool-reply-quotes result|prompt] [--native]

`--native` adds a field the relay's own types do not know (`thinking`) to the plain call,
for the caller to find in what the vendor received. Prints one line per check and exits 0
when all hold; on the first mismatch it says what was expected and what came back, exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anthropic
from anthropic import Anthropic
from anthropic.types import Message, TextBlock, ToolParam, ToolUseBlock
from checks import CheckFailed, expect, expect_true

TOOL_PROMPT = "What is the weather in Paris?"
TOOL_NAME = "get_weather"
TOOL_RESULT = '{"city":"Paris","temp_c":21}'
TOOLS: list[ToolParam] = [
    {
        "name": TOOL_NAME,
        "description": "The current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    }
]
MAX_TOKENS = 256
REQUEST_TIMEOUT = 30.0


def text_of(m: Message) -> str:
    return "".join(b.text for b in m.content if isinstance(b, TextBlock))


def tool_use_of(m: Message) -> ToolUseBlock:
    uses = [b for b in m.content if isinstance(b, ToolUseBlock)]
    if len(uses) != 1:
        raise CheckFailed(f"expected one tool_use block, got {m.content!r}")
    return uses[0]


def check_tools(client: Anthropic, model: str, quotes: str, stream: bool) -> None:
    how = "streamed" if stream else "plain"
    ask = [{"role": "user", "content": TOOL_PROMPT}]
    if stream:
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, tools=TOOLS, messages=ask) as s:
            called = s.get_final_message()
    else:
        called = client.messages.create(model=model, max_tokens=MAX_TOKENS, tools=TOOLS, messages=ask)
    expect(f"tools ({how}): stop_reason", called.stop_reason, "tool_use")
    use = tool_use_of(called)
    expect(f"tools ({how}): the tool called", use.name, TOOL_NAME)
    expect_true(f"tools ({how}): its input is an object", isinstance(use.input, dict), use.input)
    turn = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in called.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}]},
    ]
    if stream:
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, tools=TOOLS, messages=turn) as s:
            answer = s.get_final_message()
    else:
        answer = client.messages.create(model=model, max_tokens=MAX_TOKENS, tools=TOOLS, messages=turn)
    quoted = "temp_c" if quotes == "result" else TOOL_PROMPT
    expect_true(f"tools ({how}): the answer to the tool result quotes the {quotes}", quoted in text_of(answer), text_of(answer))
    expect(f"tools ({how}): final stop_reason", answer.stop_reason, "end_turn")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--expect-reply", required=True)
    p.add_argument("--tool-reply-quotes", default="result", choices=["result", "prompt"])
    p.add_argument("--native", action="store_true")
    a = p.parse_args()
    client = Anthropic(base_url=a.base_url, api_key=a.api_key, timeout=REQUEST_TIMEOUT, max_retries=0)
    try:
        # Plain: a cache_control on the block (kept by a native channel, dropped by a bridge).
        extra: dict[str, Any] = {"thinking": {"type": "enabled", "budget_tokens": 1024}} if a.native else {}
        content = [{"type": "text", "text": a.prompt, "cache_control": {"type": "ephemeral"}}]
        m = client.messages.create(
            model=a.model,
            max_tokens=MAX_TOKENS,
            system="Be brief.",
            messages=[{"role": "user", "content": content}],
            extra_body=extra or None,
        )
        expect("create: text", text_of(m), a.expect_reply)
        expect("create: stop_reason", m.stop_reason, "end_turn")
        expect_true("create: usage counted", m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage)
        # Stream: the text as it comes, and the final message.
        with client.messages.stream(
            model=a.model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": a.prompt}]
        ) as s:
            streamed = "".join(s.text_stream)
            final = s.get_final_message()
        expect("stream: text", streamed, a.expect_reply)
        expect("stream: final message text", text_of(final), a.expect_reply)
        expect("stream: final stop_reason", final.stop_reason, "end_turn")
        expect_true("stream: usage counted", final.usage.output_tokens > 0, final.usage)
        check_tools(client, a.model, a.tool_reply_quotes, stream=False)
        check_tools(client, a.model, a.tool_reply_quotes, stream=True)
        counted = client.messages.count_tokens(model=a.model, messages=[{"role": "user", "content": a.prompt}])
        expect_true("count_tokens: a positive count", counted.input_tokens > 0, counted)
        # The same key as a bearer token (Claude Code's ANTHROPIC_AUTH_TOKEN).
        bearer = Anthropic(base_url=a.base_url, auth_token=a.api_key, api_key=None, timeout=REQUEST_TIMEOUT, max_retries=0)
        m = bearer.messages.create(model=a.model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": a.prompt}])
        expect("bearer token: text", text_of(m), a.expect_reply)
        # A wrong key: Anthropic's authentication error, typed by the SDK.
        wrong = Anthropic(base_url=a.base_url, api_key="sk-wrong", timeout=REQUEST_TIMEOUT, max_retries=0)
        try:
            wrong.messages.create(model=a.model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "x"}])
            raise CheckFailed("a wrong key was accepted")
        except anthropic.AuthenticationError as e:
            expect("wrong key: authentication_error", (e.status_code, e.body["error"]["type"]), (401, "authentication_error"))
    except CheckFailed as e:
        print(f"FAILED {e}")
        return 1
    except anthropic.APIError as e:
        print(f"FAILED with an API error: {e!r} {json.dumps(getattr(e, 'body', None))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
