"""``python -m toolmaster.teacher_forcing``: token roles cover exactly the SFT loss tokens, the roles sit where
the turn's text puts them, and the report's accuracy is the argmax agreement of one teacher-forced forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.sft_conversations import episode

from toolmaster.models import load_model, smollm2_dir
from toolmaster.protocol import get_chat_format
from toolmaster.protocol.tokenize import tokenize_conversation
from toolmaster.teacher_forcing import char_roles, episode_roles, main, score_records

FMT = get_chat_format("chatml")


def _roles_of(text: str, after_error: bool) -> dict[str, str]:
    roles = char_roles(text, after_error)
    spans: dict[str, str] = {}
    for char, role in zip(text, roles):
        spans[role] = spans.get(role, "") + char
    return spans


def test_char_roles_mark_the_parts_of_a_turn():
    text = '<think>Try L:ML.</think><trial>{"name": "rp_cv", "arguments": {"conv": "L:ML", "x": 1}}</trial>'
    spans = _roles_of(text, after_error=True)
    assert spans["think"] == "Try L:ML."
    assert spans["tool_name"] == "rp_cv"
    assert spans["arg_key"] == "convx"
    assert spans["arg_value/after_error"] == "L:ML1"
    assert "arg_value/fresh" not in spans
    assert spans["structure"].startswith("<think></think><trial>{")
    assert _roles_of("<answer>19900</answer>", after_error=False)["answer"] == "19900"
    assert "arg_value/fresh" in _roles_of(text, after_error=False)


def test_roles_cover_exactly_the_loss_tokens(smollm2_tokenizer):
    for i in range(4):
        record = episode(i)
        ids, roles = episode_roles(smollm2_tokenizer, FMT, record)
        reference, mask = tokenize_conversation(smollm2_tokenizer, FMT, record["messages"], record["tools"])
        assert ids == reference
        assert [int(role is not None) for role in roles] == mask
        assert {"think", "tool_name", "arg_value/after_error", "answer"} <= set(roles)


def test_accuracy_is_the_argmax_agreement_of_one_forward(smollm2_tokenizer):
    tiny = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    records = [episode(i) for i in range(3)]
    report = score_records(tiny.model, smollm2_tokenizer, FMT, records, batch=2)
    assert report.episodes == 3
    total = sum(stats.tokens for stats in report.roles.values())
    expected_correct = expected_tokens = expected_exact_turns = 0
    for record in records:
        ids, mask = tokenize_conversation(smollm2_tokenizer, FMT, record["messages"], record["tools"])
        _, roles = episode_roles(smollm2_tokenizer, FMT, record)
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, :-1]
        right = (logits.argmax(-1) == torch.tensor(ids[1:])).tolist()
        loss_at = torch.tensor(mask[1:]).bool()
        expected_tokens += int(loss_at.sum())
        expected_correct += sum(ok for ok, m in zip(right, mask[1:]) if m)
        turn: list[bool] = []  # the current turn's action tokens (outside <think>): predicted right?
        for ok, role in zip([*right, None], [*roles[1:], None]):
            if role is None:
                if turn and all(turn):
                    expected_exact_turns += 1
                turn = []
            elif role != "think":
                turn.append(bool(ok))
    assert total == expected_tokens
    assert sum(stats.correct for stats in report.roles.values()) == expected_correct
    assert report.turns == sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in records)
    assert report.turns_exact == expected_exact_turns


@pytest.mark.slow
def test_cli_reports_a_table_and_json(tmp_path: Path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(episode(i)) + "\n" for i in range(2)))
    out = tmp_path / "tf.json"
    assert main(["--model", str(smollm2_dir()), "--data", f"demo={data}", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| demo | arg_value/after_error |" in printed
    payload = json.loads(out.read_text())
    assert payload["demo"]["episodes"] == 2
    assert 0.0 <= payload["demo"]["roles"]["think"]["accuracy"] <= 1.0


def test_cli_bad_data_is_one_line_and_exit_1(tmp_path: Path, capsys):
    assert main(["--model", str(tmp_path), "--data", "nothing"]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["--model", str(tmp_path), "--data", f"x={tmp_path / 'missing.jsonl'}"]) == 1
    assert "no such file" in capsys.readouterr().err
