"""The system prompt that lists the tools and explains the trial phase and the execution phase.

Kept short on purpose: small models (SmolLM2-135M) pay for every prompt token on every turn.
With ``trial_budget == 0`` the prompt describes direct execution only (the paper's baseline setting).
Tasks with several user turns add one sentence saying that an answer ends the turn and the session goes on;
a later user turn that brings new tools lists them above the user's text (``user_turn_message``).
The tool list comes right after the introduction, or last with ``rules_first`` (``ChatFormat.rules_first``:
the rules are the same for every task, so prompts of different tasks then share their opening tokens, which
the samplers' prefix caches reuse).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolmaster.protocol.actions import ProtocolTags
from toolmaster.protocol.tool_rendering import render_tools

if TYPE_CHECKING:
    from toolmaster.protocol.chat_format import ChatFormat

INTRO = "You solve tasks with tools you have never seen. Their descriptions may be terse, incomplete or misleading."


def system_prompt(
    tool_schemas: list[dict[str, Any]],
    trial_budget: int,
    tags: ProtocolTags | None = None,
    include_tools: bool = True,
    multi_turn: bool = False,
    rendering: str = "json",
    rules_first: bool = False,
) -> str:
    """The protocol's instructions; ``include_tools=False`` when the chat format renders tools natively.

    ``rendering``: how the tools are listed (``toolmaster.protocol.tool_rendering``: ``json`` or ``compact``);
    ``compact`` also words the rules tersely (``compact_instructions``). ``rules_first``: the tool list comes
    last, after the rules (``ChatFormat.rules_first``), so every task's prompt opens with the same tokens.
    """
    tags = tags or ProtocolTags()
    parts = [INTRO]
    tools = "Tools:\n" + render_tools(tool_schemas, rendering) if include_tools else None
    if tools and not rules_first:
        parts.append(tools)
    call_json = '{"name": "...", "arguments": {...}}'
    if rendering == "compact":
        parts.append(compact_instructions(trial_budget, tags))
    elif trial_budget > 0:
        parts.append(
            f"Work in two phases.\n"
            f"1. Trial: test tools with <{tags.trial}>{call_json}</{tags.trial}> to learn what they do, which argument "
            f"formats they accept and how they fail. Trials change nothing. You have {trial_budget} trial "
            f"call{'s' if trial_budget != 1 else ''}.\n"
            f"2. Execution: solve the task with <{tags.call}>{call_json}</{tags.call}>. These calls act for real; "
            f"read each result and fix your call if it failed."
        )
    else:
        parts.append(
            f"Solve the task with <{tags.call}>{call_json}</{tags.call}>. These calls act for real; read each "
            f"result and fix your call if it failed."
        )
    if rendering != "compact":
        parts.append(
            f"Finish with <{tags.answer}>your answer</{tags.answer}>. Each turn: optional reasoning in "
            f"<{tags.think}>...</{tags.think}>, then exactly one action."
        )
    if multi_turn:
        parts.append(
            "The user may send further requests after your answer: each answer ends one request, and the "
            "session (the state your calls changed) carries over to the next."
        )
    if tools and rules_first:
        parts.append(tools)
    return "\n\n".join(parts)


def compact_instructions(trial_budget: int, tags: ProtocolTags) -> str:
    """The protocol's rules in about half the tokens of the default wording (``rendering="compact"``)."""
    call_json = '{"name": ..., "arguments": {...}}'
    lines = []
    if trial_budget > 0:
        plural = "s" if trial_budget != 1 else ""
        lines.append(
            f"Trial: <{tags.trial}>{call_json}</{tags.trial}> tests a tool (its formats, its errors) and changes "
            f"nothing; {trial_budget} trial{plural}."
        )
    lines.append(
        f"Execution: <{tags.call}>{call_json}</{tags.call}> acts for real; fix a failed call from its result."
    )
    lines.append(
        f"End: <{tags.answer}>your answer</{tags.answer}>. Each turn: optional <{tags.think}>...</{tags.think}>, "
        "then one action."
    )
    return "\n".join(lines)


def build_messages(
    query: str,
    tool_schemas: list[dict[str, Any]],
    trial_budget: int,
    tags: ProtocolTags | None = None,
    include_tools: bool = True,
    multi_turn: bool = False,
    rendering: str = "json",
    rules_first: bool = False,
) -> list[dict[str, str]]:
    """The episode's opening messages: system prompt and the user's query."""
    return [
        {
            "role": "system",
            "content": system_prompt(
                tool_schemas, trial_budget, tags, include_tools, multi_turn, rendering, rules_first
            ),
        },
        {"role": "user", "content": query},
    ]


def opening_messages(
    fmt: ChatFormat,
    query: str,
    tool_schemas: list[dict[str, Any]],
    trial_budget: int,
    multi_turn: bool = False,
) -> list[dict[str, str]]:
    """``build_messages`` as chat format ``fmt`` lays the prompt out (its tags, whether it lists the tools
    itself, their rendering, rules first or not): what every rollout, teacher and benchmark opens with."""
    return build_messages(
        query,
        tool_schemas,
        trial_budget,
        fmt.tags,
        not fmt.native_tools,
        multi_turn=multi_turn,
        rendering=fmt.tool_rendering,
        rules_first=fmt.rules_first,
    )


def user_turn_message(
    query: str, new_tool_schemas: list[dict[str, Any]] | None = None, rendering: str = "json"
) -> dict[str, str]:
    """A later user turn; tools that become available in it are announced above the user's text."""
    if not new_tool_schemas:
        return {"role": "user", "content": query}
    tools = render_tools(new_tool_schemas, rendering)
    return {"role": "user", "content": f"New tools you can use from now on:\n{tools}\n\n{query}"}


def observation_text(observation: str, is_trial: bool, trials_used: int, trial_budget: int) -> str:
    """The tool turn's content: trial observations carry a ``[trial i/B]`` prefix so the model sees its budget."""
    return f"[trial {trials_used}/{trial_budget}] {observation}" if is_trial else observation
