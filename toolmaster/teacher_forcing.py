"""Which of a teacher's tokens a trained student predicts: teacher-forced accuracy by token role.

    python -m toolmaster.teacher_forcing --model <run>/toolmaster_sft/hf --chat-format chatml_compact \\
        --data seen=<dir>/data.jsonl --data unseen=<dir2>/data.jsonl

Each ``--data NAME=PATH`` is a synthesis dataset (``stage=synthesize``'s ``data.jsonl``: teacher episodes
with ``messages`` and ``tools``). Every episode runs through the model once, teacher-forced; each trainable
token (the loss mask of SFT) gets a *role* from where it sits in its assistant turn, and the report gives per
dataset and role the token count, the greedy accuracy (the argmax is the teacher's token) and the mean
negative log-likelihood, plus the share of turns whose every token outside ``<think>`` is predicted right (the
action as the teacher wrote it; the teacher's thoughts are seeded phrasings, not meant to be reproduced).

Roles (``token_roles``; a token's role is that of its first non-space character):
``think`` (inside ``<think>``), ``tool_name`` (the ``"name"`` value of a call), ``arg_key``, ``arg_value``
(argument values of a trial or execution call, split by what the previous observation was:
``arg_value/after_error`` when the tool's last reply was an error, the place where a self-correction's new
value appears, else ``arg_value/fresh``), ``answer`` (inside ``<answer>``), ``structure`` (tags, JSON
punctuation, the end-of-turn token).

Why: a student can fit its training episodes (a low loss) by predicting the template, while the tokens that
decide an episode (a corrected argument, the answer) are the few it misses. Comparing ``arg_value/after_error``
between seen and unseen tool families tells whether it learned to read the errors or memorised the fixes.
Not in the paper; a diagnostic of this framework.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolmaster.errors import ToolMasterError

_SPANS = (
    (re.compile(r"<think>(.*?)</think>", re.DOTALL), "think"),
    (re.compile(r"<answer>(.*?)</answer>", re.DOTALL), "answer"),
)
_CALL = re.compile(r"<(trial|call|tool_call)>(.*?)</\1>", re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*\{')
_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\]]+)')


def char_roles(text: str, after_error: bool) -> list[str]:
    """The role of every character of one assistant turn's text (see the module docstring)."""
    roles = ["structure"] * len(text)

    def mark(start: int, end: int, role: str) -> None:
        roles[start:end] = [role] * (end - start)

    for pattern, role in _SPANS:
        for match in pattern.finditer(text):
            mark(match.start(1), match.end(1), role)
    value_role = "arg_value/after_error" if after_error else "arg_value/fresh"
    for call in _CALL.finditer(text):
        body_start, body = call.start(2), call.group(2)
        name = _NAME.search(body)
        if name:
            mark(body_start + name.start(1), body_start + name.end(1), "tool_name")
        arguments = _ARGUMENTS.search(body)
        if arguments:
            for pair in _PAIR.finditer(body, arguments.end()):
                mark(body_start + pair.start(1), body_start + pair.end(1), "arg_key")
                value_start, value = body_start + pair.start(2), pair.group(2)
                inner = (1, len(value) - 1) if value.startswith('"') and len(value) >= 2 else (0, len(value))
                mark(value_start + inner[0], value_start + inner[1], value_role)
    return roles


def token_roles(tokenizer: Any, text: str, after_error: bool) -> tuple[list[int], list[str]]:
    """``text``'s token ids (as the segment tokenizer makes them) and each token's role."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    roles_by_char = char_roles(text, after_error)
    roles = []
    for start, end in encoded["offset_mapping"]:
        piece = text[start:end]
        first = start + (len(piece) - len(piece.lstrip())) if piece.strip() else start
        roles.append(roles_by_char[first] if first < len(text) else "structure")
    return list(encoded["input_ids"]), roles


_TRIAL_PREFIX = re.compile(r"^\[trial \d+/\d+\]\s*")


def _is_error(observation: str) -> bool:
    """The observation is an error report (the environment's ``Error (<kind>): ...``), in a trial or not."""
    return _TRIAL_PREFIX.sub("", observation).lower().startswith("error")


def episode_roles(tokenizer: Any, fmt: Any, record: dict[str, Any]) -> tuple[list[int], list[str | None]]:
    """The episode's full ids and, per token, its role (None: not trained, e.g. prompts and observations).

    Rebuilds ``tokenize_conversation``'s segments; a trainable segment that is an assistant turn's content
    gets its tokens' roles, any other trainable segment (the end-of-turn token) is ``structure``."""
    messages = record["messages"]
    # assistant content -> whether the tool's reply before it was an error, one flag per occurrence in order
    contents: dict[str, deque[bool]] = {}
    previous_error = False
    for message in messages:
        if message["role"] == "assistant":
            contents.setdefault(message["content"], deque()).append(previous_error)
        previous_error = message["role"] == "tool" and _is_error(message["content"])
    ids: list[int] = []
    roles: list[str | None] = []
    for text, trainable in fmt.segments(messages, record.get("tools")):
        if trainable and contents.get(text):
            piece, piece_roles = token_roles(tokenizer, text, contents[text].popleft())
            ids += piece
            roles += piece_roles
            continue
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids += piece
        roles += ["structure" if trainable else None] * len(piece)
    return ids, roles


@dataclass
class RoleStats:
    tokens: int = 0
    correct: int = 0
    nll: float = 0.0

    def row(self) -> dict[str, float | int]:
        n = max(self.tokens, 1)
        return {"tokens": self.tokens, "accuracy": self.correct / n, "nll": self.nll / n}


@dataclass
class Report:
    roles: dict[str, RoleStats] = field(default_factory=lambda: defaultdict(RoleStats))
    turns: int = 0
    turns_exact: int = 0
    episodes: int = 0


@torch.inference_mode()
def score_records(
    model: Any, tokenizer: Any, fmt: Any, records: list[dict[str, Any]], batch: int = 4
) -> Report:
    """Teacher-forced statistics per role over ``records`` (episodes in ``batch``-sized forwards)."""
    report = Report()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [episode_roles(tokenizer, fmt, record) for record in records]
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
        logits = model(input_ids=input_ids.to(device)).logits.float()  # right-padded: no mask needed
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:].to(device)
        picked = logprobs.gather(-1, targets[..., None]).squeeze(-1).cpu()
        right = (logprobs.argmax(dim=-1) == targets).cpu()
        for row, (ids, roles) in enumerate(chunk):
            report.episodes += 1
            turn_ok, in_turn = True, False
            for position in range(1, len(ids)):
                role = roles[position]
                if role is None:
                    if in_turn:
                        report.turns += 1
                        report.turns_exact += int(turn_ok)
                    turn_ok, in_turn = True, False
                    continue
                in_turn = True
                ok = bool(right[row, position - 1])
                turn_ok = turn_ok and (ok or role == "think")
                stats = report.roles[role]
                stats.tokens += 1
                stats.correct += int(ok)
                stats.nll -= float(picked[row, position - 1])
            if in_turn:
                report.turns += 1
                report.turns_exact += int(turn_ok)
    return report


ROLE_ORDER = (
    "structure",
    "think",
    "tool_name",
    "arg_key",
    "arg_value/fresh",
    "arg_value/after_error",
    "answer",
)


def format_table(reports: dict[str, Report]) -> str:
    lines = [
        "| data | role | tokens | accuracy | mean NLL |",
        "|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        for role in ROLE_ORDER:
            if role in report.roles:
                row = report.roles[role].row()
                lines.append(
                    f"| {name} | {role} | {row['tokens']} | {row['accuracy']:.3f} | {row['nll']:.3f} |"
                )
        share = report.turns_exact / max(report.turns, 1)
        lines.append(f"| {name} | turns with every action token right | {report.turns} | {share:.3f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolmaster.teacher_forcing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="an HF model dir (an SFT or GRPO run's hf/)")
    parser.add_argument("--chat-format", default="chatml", help="the chat format the model was trained with")
    parser.add_argument("--data", action="append", required=True, help="NAME=PATH of a synthesis data.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="episodes per dataset (default: all)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from toolmaster.io import read_jsonl
    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format

    try:
        datasets = {}
        for spec in args.data:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ToolMasterError(f"--data {spec!r}: expected NAME=PATH")
            if not Path(path).is_file():
                raise ToolMasterError(f"--data {name}: no such file {path}")
            records = list(read_jsonl(Path(path)))
            if not records or "messages" not in records[0]:
                raise ToolMasterError(f"--data {name}: {path} holds no synthesis episodes (no 'messages')")
            datasets[name] = records[: args.limit] if args.limit else records
        fmt = get_chat_format(args.chat_format)
        loaded = load_model(source="hf", path=args.model, dtype=args.dtype, chat_format=args.chat_format)
    except ToolMasterError as exc:
        print(f"toolmaster.teacher_forcing: error: {exc}", file=sys.stderr)
        return 1
    model = loaded.model.eval()
    reports = {
        name: score_records(model, loaded.tokenizer, fmt, records, args.batch)
        for name, records in datasets.items()
    }
    table = format_table(reports)
    print(f"model {args.model} ({next(model.parameters()).dtype}), teacher-forced")
    print(table)
    if args.json:
        payload = {
            name: {
                "episodes": r.episodes,
                "turns": r.turns,
                "turns_exact": r.turns_exact,
                "roles": {role: stats.row() for role, stats in r.roles.items()},
            }
            for name, r in reports.items()
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
