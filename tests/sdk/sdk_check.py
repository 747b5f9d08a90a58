#!/usr/bin/env python3
"""Drive the relay with the official OpenAI Python SDK, used as its users use it, and check
what comes back: models, chat (plain and streamed), tool calls with their results (plain
and streamed) and, when asked, embeddings.

    sdk_check.py --base-url http://127.0.0.1:8080/v1 --api-key sk-... --model gpt-4o \
        --prompt "Hello there" --expect-reply "Hello from ...: Hello there" \
        [--tool-reply-quotes result|prompt] [--embedding-model text-embedding-3-small]

Prints one line per check and exits 0 when all hold; on the first mismatch it prints what
was expected and what came back, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import openai
from openai import OpenAI, Stream, omit
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionStreamOptionsParam,
    ChatCompletionToolParam,
)

SYSTEM = "Be brief."
TOOL_PROMPT = "What is the weather in Paris?"
TOOL_NAME = "get_weather"
# Compact JSON with sorted keys, so that a vendor that re-encodes it quotes it unchanged.
TOOL_RESULT = '{"city":"Paris","temp_c":21}'
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city's name"}},
                "required": ["city"],
            },
        },
    }
]
EMBEDDING_INPUTS = ["The first text to embed", "a second, different one"]
# Seconds one request may take: the mocks answer at once, so this only bounds a hang.
REQUEST_TIMEOUT = 30.0


class CheckFailed(Exception):
    """A check that did not hold; the message says what was expected and what came back."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_equal(actual: object, expected: object, what: str) -> None:
    expect(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


def tokens(usage: CompletionUsage) -> str:
    return f"{usage.prompt_tokens}+{usage.completion_tokens} tokens"


def check_usage(usage: CompletionUsage | None, what: str) -> CompletionUsage:
    if usage is None:
        raise CheckFailed(f"{what}: no usage")
    expect(usage.prompt_tokens > 0, f"{what}: prompt_tokens is {usage.prompt_tokens}")
    expect(usage.completion_tokens > 0, f"{what}: completion_tokens is {usage.completion_tokens}")
    expect_equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, f"{what}: total_tokens")
    return usage


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the client sees it, whether it came whole or in stream deltas."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, object]:
        try:
            parsed = json.loads(self.arguments)
        except json.JSONDecodeError as e:
            raise CheckFailed(f"tool call arguments are not JSON ({e}): {self.arguments!r}") from e
        expect(isinstance(parsed, dict), f"tool call arguments are not a JSON object: {self.arguments!r}")
        return cast(dict[str, object], parsed)


def check_tool_call(call: ToolCall, what: str) -> None:
    expect(call.id != "", f"{what}: the tool call has no id")
    expect_equal(call.name, TOOL_NAME, f"{what}: tool name")
    call.parsed_arguments()


@dataclass
class CallParts:
    """A streamed tool call being put together from its deltas."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class StreamedReply:
    """A whole stream, read as SDK users read one."""

    content: str = ""
    role: str | None = None
    finish_reason: str | None = None
    usage: CompletionUsage | None = None
    chunks: int = 0
    ids: set[str] = field(default_factory=set)
    calls: dict[int, CallParts] = field(default_factory=dict)

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(p.id, p.name, p.arguments) for _, p in sorted(self.calls.items())]


def read_stream(stream: Stream[ChatCompletionChunk], what: str) -> StreamedReply:
    reply = StreamedReply()
    seen_choices = False
    for chunk in stream:
        expect_equal(chunk.object, "chat.completion.chunk", f"{what}: chunk object")
        expect(reply.usage is None, f"{what}: a chunk after the usage chunk: {chunk.to_json()}")
        reply.chunks += 1
        reply.ids.add(chunk.id)
        if chunk.usage is not None:
            expect_equal(chunk.choices, [], f"{what}: choices of the usage chunk")
            reply.usage = chunk.usage
        for choice in chunk.choices:
            expect_equal(choice.index, 0, f"{what}: choice index")
            expect(reply.finish_reason is None, f"{what}: a delta after the finish reason: {chunk.to_json()}")
            delta = choice.delta
            if not seen_choices:
                reply.role = delta.role
                seen_choices = True
            reply.content += delta.content or ""
            # As SDK users do: the id and name come first, the arguments in pieces after,
            # all under the call's index.
            for d in delta.tool_calls or []:
                parts = reply.calls.setdefault(d.index, CallParts())
                if d.id:
                    expect(parts.id in ("", d.id), f"{what}: call {d.index} changed id from {parts.id} to {d.id}")
                    parts.id = d.id
                if d.function is not None:
                    parts.name += d.function.name or ""
                    parts.arguments += d.function.arguments or ""
            if choice.finish_reason is not None:
                reply.finish_reason = choice.finish_reason
    expect_equal(reply.role, "assistant", f"{what}: role of the first delta")
    expect(reply.finish_reason is not None, f"{what}: the stream ended without a finish reason")
    expect_equal(len(reply.ids), 1, f"{what}: number of distinct chunk ids {sorted(reply.ids)}")
    return reply


class Checker:
    def __init__(self, client: OpenAI, args: argparse.Namespace) -> None:
        self.client = client
        self.model: str = args.model
        self.prompt: str = args.prompt
        self.expected_reply: str = args.expect_reply
        self.tool_reply_quote = TOOL_RESULT if args.tool_reply_quotes == "result" else TOOL_PROMPT
        self.embedding_model: str | None = args.embedding_model
        self.usage: CompletionUsage | None = None
        self.tool_call: ToolCall | None = None
        self.tool_reply: str | None = None

    def chat(self, messages: list[ChatCompletionMessageParam], tools: bool) -> ChatCompletion:
        return self.client.chat.completions.create(model=self.model, messages=messages, tools=TOOLS if tools else omit)

    def stream(self, messages: list[ChatCompletionMessageParam], tools: bool, what: str) -> StreamedReply:
        options: ChatCompletionStreamOptionsParam = {"include_usage": True}
        stream = self.client.chat.completions.create(
            model=self.model, messages=messages, tools=TOOLS if tools else omit, stream=True, stream_options=options
        )
        reply = read_stream(stream, what)
        check_usage(reply.usage, f"{what}: final usage")
        return reply

    def prompt_messages(self) -> list[ChatCompletionMessageParam]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.prompt}]

    def check_models(self) -> str:
        ids = [m.id for m in self.client.models.list()]
        expect(self.model in ids, f"model {self.model!r} is not listed: {ids}")
        if self.embedding_model is not None:
            expect(self.embedding_model in ids, f"model {self.embedding_model!r} is not listed: {ids}")
        return f"{len(ids)} model(s): {', '.join(ids)}"

    def check_chat(self) -> str:
        completion = self.chat(self.prompt_messages(), tools=False)
        expect_equal(completion.object, "chat.completion", "object")
        expect_equal(len(completion.choices), 1, "number of choices")
        choice = completion.choices[0]
        expect_equal(choice.message.role, "assistant", "role")
        expect_equal(choice.message.content, self.expected_reply, "reply")
        expect_equal(choice.finish_reason, "stop", "finish_reason")
        expect(not choice.message.tool_calls, f"unasked tool calls: {choice.message.tool_calls}")
        self.usage = check_usage(completion.usage, "usage")
        return f"{choice.message.content!r}, {tokens(self.usage)}"

    def check_chat_stream(self) -> str:
        reply = self.stream(self.prompt_messages(), tools=False, what="stream")
        expect_equal(reply.content, self.expected_reply, "joined content")
        expect_equal(reply.finish_reason, "stop", "finish_reason")
        expect_equal(reply.calls, {}, "unasked tool call deltas")
        if self.usage is not None:
            expect_equal(reply.usage, self.usage, "the stream's usage against the plain answer's")
        usage = check_usage(reply.usage, "final usage")
        return f"{reply.content!r} in {reply.chunks} chunks, {tokens(usage)}"

    def check_tools(self) -> str:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": TOOL_PROMPT}]
        completion = self.chat(messages, tools=True)
        choice = completion.choices[0]
        expect_equal(choice.finish_reason, "tool_calls", "finish_reason")
        calls = choice.message.tool_calls or []
        expect_equal(len(calls), 1, "number of tool calls")
        call = calls[0]
        if not isinstance(call, ChatCompletionMessageFunctionToolCall):
            raise CheckFailed(f"not a function tool call: {call.to_json()}")
        self.tool_call = ToolCall(call.id, call.function.name, call.function.arguments)
        check_tool_call(self.tool_call, "tool call")
        check_usage(completion.usage, "usage of the tool call")

        # OpenAI's function-calling guide appends the SDK's message object as it came back:
        # every field the relay answered goes back to it.
        messages.append(cast(ChatCompletionMessageParam, choice.message))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
        answer = self.chat(messages, tools=True)
        self.tool_reply = self.check_tool_reply(answer)
        return f"{self.tool_call}, then {self.tool_reply!r}"

    def check_tool_reply(self, completion: ChatCompletion) -> str:
        choice = completion.choices[0]
        expect_equal(choice.finish_reason, "stop", "finish_reason after the tool result")
        text = choice.message.content
        if not text:
            raise CheckFailed(f"no text after the tool result: {choice.message.to_json()}")
        expect(self.tool_reply_quote in text, f"the reply does not quote {self.tool_reply_quote!r}: {text!r}")
        check_usage(completion.usage, "usage after the tool result")
        return text

    def check_tools_stream(self) -> str:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": TOOL_PROMPT}]
        reply = self.stream(messages, tools=True, what="tool call stream")
        expect_equal(reply.finish_reason, "tool_calls", "finish_reason")
        calls = reply.tool_calls()
        expect_equal(len(calls), 1, "number of streamed tool calls")
        expect_equal(sorted(reply.calls), [0], "tool call indexes")
        call = calls[0]
        check_tool_call(call, "streamed tool call")
        if self.tool_call is not None:
            expect_equal(call.name, self.tool_call.name, "the streamed call's name against the plain one's")
            expect_equal(
                call.parsed_arguments(),
                self.tool_call.parsed_arguments(),
                "the streamed call's arguments against the plain one's",
            )

        # A streamed answer has no message object: the client rebuilds it from the deltas.
        messages.append(
            {
                "role": "assistant",
                "content": reply.content or None,
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
        answer = self.stream(messages, tools=True, what="stream after the tool result")
        expect_equal(answer.finish_reason, "stop", "finish_reason after the tool result")
        expect_equal(answer.calls, {}, "tool call deltas after the tool result")
        if self.tool_reply is not None:
            expect_equal(answer.content, self.tool_reply, "the streamed reply against the plain one")
        expect(
            self.tool_reply_quote in answer.content,
            f"the reply does not quote {self.tool_reply_quote!r}: {answer.content!r}",
        )
        return f"{call}, then {answer.content!r}"

    def check_embeddings(self, model: str) -> str:
        # No encoding_format, as most callers: the SDK asks for base64 and decodes it.
        result = self.client.embeddings.create(model=model, input=EMBEDDING_INPUTS)
        expect_equal(len(result.data), len(EMBEDDING_INPUTS), "number of vectors")
        expect_equal([d.index for d in result.data], list(range(len(EMBEDDING_INPUTS))), "vector indexes")
        vectors = [d.embedding for d in result.data]
        for v in vectors:
            expect(len(v) > 0 and all(isinstance(x, float) for x in v), f"not a vector of floats: {v!r}")
        expect_equal(len({len(v) for v in vectors}), 1, "distinct vector sizes")
        expect(vectors[0] != vectors[1], "different inputs gave the same vector")
        expect(result.usage.prompt_tokens > 0, f"embedding usage: {result.usage}")
        return f"{len(vectors)} vectors of {len(vectors[0])} floats"

    def checks(self) -> list[tuple[str, Callable[[], str]]]:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("models.list", self.check_models),
            ("chat", self.check_chat),
            ("chat stream", self.check_chat_stream),
            ("tool call and result", self.check_tools),
            ("tool call and result, streamed", self.check_tools_stream),
        ]
        if (model := self.embedding_model) is not None:
            steps.append(("embeddings", lambda: self.check_embeddings(model)))
        return steps


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True, help="the relay's OpenAI base URL, with /v1")
    p.add_argument("--api-key", required=True, help="a client key the relay accepts")
    p.add_argument("--model", required=True, help="the chat model to ask for")
    p.add_argument("--prompt", required=True, help="the user message of the plain chat")
    p.add_argument("--expect-reply", required=True, help="the exact answer to --prompt")
    p.add_argument(
        "--tool-reply-quotes",
        choices=["result", "prompt"],
        default="result",
        help="what the answer to a tool result quotes: the result, or the user's question",
    )
    p.add_argument("--embedding-model", help="also check embeddings with this model")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # No retries: a failure must show as itself, not be papered over by a second try.
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=REQUEST_TIMEOUT)
    print(f"openai {openai.__version__} against {args.base_url}, model {args.model}")
    for name, check in Checker(client, args).checks():
        try:
            detail = check()
        except CheckFailed as e:
            print(f"FAIL {name}: {e}", file=sys.stderr)
            return 1
        except openai.APIStatusError as e:
            print(f"FAIL {name}: HTTP {e.status_code}: {e.response.text}", file=sys.stderr)
            return 1
        except openai.APIError as e:
            print(f"FAIL {name}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"ok   {name}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
