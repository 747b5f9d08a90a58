#!/usr/bin/env python3
"""Drive the relay's OpenAI Responses API with the official OpenAI Python SDK, used as Codex
and the Agents SDK use it, and check what comes back:

- responses.create plain, streamed (raw events: types, sequence numbers, text) and through
  the SDK's stream helper (final response);
- function tools: a call, then its output sent back (plain and streamed);
- previous_response_id (the relay keeps the conversation), retrieve, input_items, delete;
- background mode: create → poll → result; a background stream cut by the client and resumed
  with starting_after; cancel (twice: idempotent);
- a wrong key and a refused request in OpenAI's error shape.

    responses_check.py --base-url http://127.0.0.1:8080/v1 --api-key sk-... --model m \
        --slow-model m-slow --prompt "Hello there" --expect-reply "Hello from ...: Hello there" \
        [--tool-reply-quotes result|prompt] [--native]

`--slow-model` names a model whose channel streams slowly (for cancel and resume). `--native`
adds fields the relay's own types do not know, for the caller to find in what the vendor got.
Prints one line per check and exits 0 when all hold; on the first mismatch it says what was
expected and what came back, exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import openai
from openai import OpenAI
from checks import CheckFailed, expect, expect_true

TOOL_PROMPT = "What is the weather in Paris?"
TOOL_NAME = "get_weather"
TOOL_RESULT = '{"city":"Paris","temp_c":21}'
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": TOOL_NAME,
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    }
]
MAX_OUTPUT_TOKENS = 256
REQUEST_TIMEOUT = 30.0
# How long a background response may take to finish before the check gives up.
BACKGROUND_DEADLINE = 30.0
TERMINAL = ("response.completed", "response.failed", "response.incomplete")


def check_events(what: str, events: list[Any], first_seq: int) -> str:
    """The events' sequence numbers run from `first_seq` by one; returns the streamed text."""
    seqs = [e.sequence_number for e in events]
    expect(f"{what}: sequence numbers run by one from {first_seq}", seqs, list(range(first_seq, first_seq + len(seqs))))
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def function_call_of(r: Any) -> Any:
    calls = [o for o in r.output if o.type == "function_call"]
    if len(calls) != 1:
        raise CheckFailed(f"expected one function_call item, got {r.output!r}")
    return calls[0]


def check_tools(client: OpenAI, model: str, quotes: str, stream: bool) -> None:
    how = "streamed" if stream else "plain"
    ask: list[Any] = [{"role": "user", "content": TOOL_PROMPT}]
    if stream:
        with client.responses.stream(model=model, tools=TOOLS, input=ask) as s:
            called = s.get_final_response()
    else:
        called = client.responses.create(model=model, tools=TOOLS, input=ask)
    call = function_call_of(called)
    expect(f"tools ({how}): the function called", call.name, TOOL_NAME)
    expect_true(f"tools ({how}): its arguments are a JSON object", isinstance(json.loads(call.arguments), dict), call.arguments)
    turn = ask + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
    ]
    if stream:
        with client.responses.stream(model=model, tools=TOOLS, input=turn) as s:
            answer = s.get_final_response()
    else:
        answer = client.responses.create(model=model, tools=TOOLS, input=turn)
    quoted = "temp_c" if quotes == "result" else TOOL_PROMPT
    expect_true(f"tools ({how}): the answer to the tool output quotes the {quotes}", quoted in answer.output_text, answer.output_text)
    expect(f"tools ({how}): status", answer.status, "completed")


def wait_finished(client: OpenAI, rid: str) -> Any:
    deadline = time.monotonic() + BACKGROUND_DEADLINE
    seen = []
    while True:
        r = client.responses.retrieve(rid)
        if not seen or seen[-1] != r.status:
            seen.append(r.status)
        if r.status not in ("queued", "in_progress"):
            print(f"ok  background: statuses seen while polling {seen}")
            return r
        if time.monotonic() > deadline:
            raise CheckFailed(f"background response {rid} still {r.status} after {BACKGROUND_DEADLINE} s")
        time.sleep(0.05)


def check_background(client: OpenAI, a: argparse.Namespace) -> None:
    # Submit, poll, result.
    r = client.responses.create(model=a.model, input=a.prompt, background=True)
    expect_true("background: answered at once, queued or running", r.status in ("queued", "in_progress"), r.status)
    expect("background: flagged", r.background, True)
    done = wait_finished(client, r.id)
    expect("background: completed", done.status, "completed")
    expect("background: text", done.output_text, a.expect_reply)
    expect_true("background: usage counted", done.usage is not None and done.usage.output_tokens > 0, done.usage)

    # A background stream cut by the client after a few deltas, resumed where it stopped.
    first: list[Any] = []
    deltas = 0
    s = client.responses.create(model=a.slow_model, input=a.prompt, background=True, stream=True)
    for ev in s:
        first.append(ev)
        if ev.type == "response.output_text.delta":
            deltas += 1
        if deltas == 2 or ev.type in TERMINAL:
            break
    s.close()
    expect_true("resume: the cut stream stopped before its end", first[-1].type not in TERMINAL, first[-1].type)
    rid = first[0].response.id
    expect("resume: the live events say background", first[0].response.background, True)
    text = check_events("resume: before the cut", first, 0)
    last = first[-1].sequence_number
    rest = list(client.responses.retrieve(rid, stream=True, starting_after=last))
    text += check_events("resume: after starting_after", rest, last + 1)
    expect("resume: the stream ends completed", rest[-1].type, "response.completed")
    expect("resume: the text of both parts", text, a.expect_reply)
    expect("resume: the completed response's text", rest[-1].response.output_text, a.expect_reply)

    # Cancel while it runs; a second cancel answers the same.
    c = client.responses.create(model=a.slow_model, input=a.prompt, background=True)
    cancelled = client.responses.cancel(c.id)
    expect("cancel: cancelled", cancelled.status, "cancelled")
    again = client.responses.cancel(c.id)
    expect("cancel: a second cancel is answered the same", (again.id, again.status), (c.id, "cancelled"))
    expect("cancel: retrieve says cancelled", client.responses.retrieve(c.id).status, "cancelled")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--slow-model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--expect-reply", required=True)
    p.add_argument("--tool-reply-quotes", default="result", choices=["result", "prompt"])
    p.add_argument("--native", action="store_true")
    a = p.parse_args()
    client = OpenAI(base_url=a.base_url, api_key=a.api_key, timeout=REQUEST_TIMEOUT, max_retries=0)
    try:
        # Plain, with instructions; a native channel also gets fields the relay does not know.
        extra: dict[str, Any] = {"reasoning": {"effort": "low"}, "prompt_cache_key": "relay-check"} if a.native else {}
        r = client.responses.create(
            model=a.model,
            instructions="Be brief.",
            input=a.prompt,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            temperature=0.5,
            extra_body=extra or None,
        )
        expect("create: text", r.output_text, a.expect_reply)
        expect("create: status", r.status, "completed")
        expect_true("create: the relay's id", r.id.startswith("resp_"), r.id)
        expect("create: instructions echoed", r.instructions, "Be brief.")
        expect_true("create: usage counted", r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage)
        expect("create: total tokens", r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens)

        # Streamed, raw: every event typed, numbered from 0, ending completed.
        events = list(client.responses.create(model=a.model, input=a.prompt, stream=True))
        types = [e.type for e in events]
        expect("stream: opens with created, in_progress", types[:2], ["response.created", "response.in_progress"])
        expect("stream: ends with completed", types[-1], "response.completed")
        for t in ("response.output_item.added", "response.content_part.added", "response.output_text.done", "response.output_item.done"):
            expect_true(f"stream: has {t}", t in types, types)
        text = check_events("stream", events, 0)
        expect("stream: text", text, a.expect_reply)
        final = events[-1].response
        expect("stream: the completed response's text", final.output_text, a.expect_reply)
        expect("stream: one id throughout", {e.response.id for e in events if hasattr(e, "response")}, {final.id})
        expect_true("stream: usage counted", final.usage is not None and final.usage.output_tokens > 0, final.usage)
        # Through the SDK's stream helper.
        with client.responses.stream(model=a.model, input=a.prompt) as s:
            helper = s.get_final_response()
        expect("stream helper: final text", helper.output_text, a.expect_reply)

        check_tools(client, a.model, a.tool_reply_quotes, stream=False)
        check_tools(client, a.model, a.tool_reply_quotes, stream=True)

        # The relay keeps the conversation: a second turn names the first.
        one = client.responses.create(model=a.model, input="My name is Ada.")
        two = client.responses.create(model=a.model, input=a.prompt, previous_response_id=one.id)
        expect("previous_response_id: text", two.output_text, a.expect_reply)
        expect("previous_response_id: echoed", two.previous_response_id, one.id)
        got = client.responses.retrieve(one.id)
        expect("retrieve: the stored response", (got.id, got.output_text), (one.id, one.output_text))
        items = client.responses.input_items.list(two.id)
        texts = [c.text for i in items.data for c in (i.content or []) if getattr(c, "text", None)]
        expect("input_items: this turn's input", texts, [a.prompt])
        client.responses.delete(one.id)
        try:
            client.responses.retrieve(one.id)
            raise CheckFailed("a deleted response was still there")
        except openai.NotFoundError as e:
            expect("delete: then 404", e.status_code, 404)

        check_background(client, a)

        # Refused: a wrong key, and a hosted tool the relay cannot run.
        wrong = OpenAI(base_url=a.base_url, api_key="sk-wrong", timeout=REQUEST_TIMEOUT, max_retries=0)
        try:
            wrong.responses.create(model=a.model, input="x")
            raise CheckFailed("a wrong key was accepted")
        except openai.AuthenticationError as e:
            expect("wrong key: 401", e.status_code, 401)
        if not a.native:
            try:
                client.responses.create(model=a.model, input="x", tools=[{"type": "web_search"}])
                raise CheckFailed("a hosted tool was accepted on a bridged channel")
            except openai.BadRequestError as e:
                expect_true("hosted tool: 400 naming it", "web_search" in str(e.body), e.body)
    except CheckFailed as e:
        print(f"FAILED {e}")
        return 1
    except openai.APIError as e:
        print(f"FAILED with an API error: {e!r} {json.dumps(getattr(e, 'body', None))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
