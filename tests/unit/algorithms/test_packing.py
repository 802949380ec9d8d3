"""Packing real trajectories (scripted turns, a real tiny BPE tokenizer, a real ToolEnv) for the GRPO loss.

The loss may only see sampled tokens: the packed ``loss_mask`` must be aligned with ``token_logprobs``'s
``[B, T - 1]`` layout (column t scores token t + 1), cover exactly the tokens the engine produced, and leave
prompts, observations and padding out; sampler log-probs must land on the same columns.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from toolmaster.algorithms import token_logprobs
from toolmaster.algorithms.logprobs import policy_logprobs
from toolmaster.algorithms.packing import pack_trajectories
from toolmaster.envs import Task, Tool, ToolSuite
from toolmaster.models import load_model
from toolmaster.protocol import get_chat_format
from toolmaster.samplers.base import Generation, SamplingParams
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine

FMT = get_chat_format("chatml")


def _suite() -> ToolSuite:
    def zq_add(a: int, b: int) -> int:
        return a + b

    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    return ToolSuite.of([Tool("zq_add", "Adds.", schema, zq_add)])


def _call(kind: str, a: int, b: int) -> str:
    return f"<{kind}>{json.dumps({'name': 'zq_add', 'arguments': {'a': a, 'b': b}})}</{kind}>"


SCRIPTS = {  # task index -> assistant turns
    0: [_call("trial", 1, 1), _call("call", 0, 2), "<think>done</think><answer>2</answer>"],
    1: ["<answer>3</answer>"],
    2: ['<call>{"name": "zq_add", "arguments": {"a": 2,}</call>', _call("call", 2, 2), "<answer>4</answer>"],
}


def fake_logprob(token_id: int) -> float:
    """A distinctive 'sampling log-prob' per token id, to check where the packer puts them."""
    return -((token_id % 997) + 1) / 1000.0


class LogprobEngine(ScriptedEngine):
    """The scripted engine, reporting ``fake_logprob`` for every sampled token."""

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: Any = None,
        keys: Any = None,
    ) -> list[Generation]:
        out = super().generate(prompts, params, max_new_tokens, messages, keys)
        for gen in out:
            gen.logprobs = [fake_logprob(t) for t in gen.token_ids]
        return out


def _respond(prompt: str) -> str:
    task = int(prompt.split("Add ", 1)[1].split(" ", 1)[0])
    done = prompt.count("<|im_start|>assistant") - 1
    turns = SCRIPTS[task]
    return turns[min(done, len(turns) - 1)]


@pytest.fixture(scope="module")
def trajectories(tiny_tokenizer) -> list[Any]:
    tasks = [
        Task(id=f"t{i}", query=f"Add {i} and 2.", answer=str(i + 2), tool_names=["zq_add"]) for i in SCRIPTS
    ]
    engine = LogprobEngine(tiny_tokenizer, _respond)
    trajs = rollout(engine, tiny_tokenizer, FMT, _suite(), tasks, RolloutConfig(max_turns=5, n_samples=1))
    assert [t.correct for t in trajs] == [True, True, True]
    assert len({len(t.token_ids) for t in trajs}) == 3  # different lengths: padding matters
    return trajs


def _sampled_ids(tokenizer, traj) -> list[int]:
    """What the engine produced: each assistant turn's text tokens plus its end-of-turn token."""
    out: list[int] = []
    for message in traj.messages:
        if message["role"] == "assistant":
            out += tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
    return out


def _turn_spans(tokenizer, ids: list[int]) -> list[tuple[str, int, int]]:
    """(role, start, stop) of each ``<|im_start|>role ... <|im_end|>`` turn in a token sequence."""
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = [p for p, token in enumerate(ids) if token == start_id] + [len(ids)]
    return [
        (tokenizer.decode(ids[a + 1 : b]).split("\n")[0].strip(), a, b) for a, b in zip(starts, starts[1:])
    ]


def test_layout_right_padding_and_row_order(trajectories, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    packed = pack_trajectories(trajectories, [0.5, -1.0, 0.25], pad)
    lengths = [len(t.token_ids) for t in trajectories]
    n, width = len(trajectories), max(lengths)
    assert packed.input_ids.shape == (n, width) and packed.attention_mask.shape == (n, width)
    assert packed.loss_mask.shape == packed.old_logprobs.shape == (n, width - 1)
    assert packed.loss_mask.dtype == torch.bool and packed.old_logprobs.dtype == torch.float32
    assert packed.lengths.tolist() == sorted(lengths, reverse=True)  # longest first
    for row, i in enumerate(packed.index.tolist()):
        t, length = trajectories[i], lengths[i]
        assert packed.input_ids[row, :length].tolist() == t.token_ids
        assert (packed.input_ids[row, length:] == pad).all()  # padding on the right
        assert packed.attention_mask[row].tolist() == [1] * length + [0] * (width - length)
        assert not packed.loss_mask[row, length - 1 :].any()
        assert packed.advantages[row] == [0.5, -1.0, 0.25][i]


def test_loss_mask_selects_exactly_the_sampled_tokens(trajectories, tiny_tokenizer):
    packed = pack_trajectories(trajectories, [0.0] * 3, tiny_tokenizer.pad_token_id)
    targets = packed.input_ids[:, 1:]  # what token_logprobs column t scores
    for row, i in enumerate(packed.index.tolist()):
        t = trajectories[i]
        picked = targets[row][packed.loss_mask[row]].tolist()
        assert picked == _sampled_ids(tiny_tokenizer, t)
        # every token of a system, user or tool turn (observations) scores with loss mask 0
        spans = _turn_spans(tiny_tokenizer, t.token_ids)
        assert [role for role, _, _ in spans].count("tool") == sum(m["role"] == "tool" for m in t.messages)
        for role, start, stop in spans:
            scored = packed.loss_mask[row, max(start - 1, 0) : stop - 1]  # column p - 1 scores token p
            assert scored.any() == (role == "assistant"), role
        # the mask is the trajectory's own loss mask, shifted by one
        assert packed.loss_mask[row, : len(t.token_ids) - 1].tolist() == [bool(m) for m in t.loss_mask[1:]]
        assert not packed.loss_mask[row, : t.prompt_length - 1].any()


def test_old_logprobs_sit_on_the_scored_tokens(trajectories, tiny_tokenizer):
    packed = pack_trajectories(trajectories, [0.0] * 3, tiny_tokenizer.pad_token_id)
    expected = torch.tensor([[fake_logprob(int(x)) for x in row] for row in packed.input_ids[:, 1:]])
    torch.testing.assert_close(packed.old_logprobs[packed.loss_mask], expected[packed.loss_mask])
    assert (packed.old_logprobs[~packed.loss_mask] == 0).all()
    assert (packed.old_logprobs[packed.loss_mask] < 0).all()


def test_masks_align_with_token_logprobs_and_the_policy_path(trajectories, tiny_tokenizer):
    """token_logprobs' [B, T - 1] output lines up with loss_mask, and the trainer's selected-columns path
    (logits only where a loss token follows) gives the same log-probs there and 0 elsewhere."""
    tiny = load_model(source="tiny", dtype="float32", device="cpu")
    packed = pack_trajectories(trajectories, [1.0, -1.0, 0.5], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
        full = token_logprobs(logits, packed.input_ids, temperature=0.7)
        selected, entropy = policy_logprobs(tiny.model, packed, temperature=0.7, with_entropy=True)
    assert full.shape == packed.loss_mask.shape == selected.shape
    mask = packed.loss_mask
    torch.testing.assert_close(selected[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert (selected[:, ~mask.any(dim=0)] == 0).all()  # no logits where no row has a loss token
    assert entropy is not None and float(entropy) > 0


def test_keep_drops_rows_and_micro_batches_cut_their_width(trajectories, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    packed = pack_trajectories(trajectories, [1.0, 2.0, 3.0], pad, keep=[True, False, True])
    assert sorted(packed.index.tolist()) == [0, 2] and len(packed) == 2
    assert sorted(packed.advantages.tolist()) == [1.0, 3.0]
    everything = pack_trajectories(trajectories, [1.0, 2.0, 3.0], pad)
    parts = list(everything.micro_batches(2))
    assert [len(p) for p in parts] == [2, 1]
    assert torch.cat([p.index for p in parts]).tolist() == everything.index.tolist()
    last = parts[-1]
    assert last.input_ids.shape[1] == int(last.lengths.max()) < everything.input_ids.shape[1]
    assert last.loss_mask.shape[1] == last.input_ids.shape[1] - 1
    assert last.loss_mask.sum() == everything.loss_mask[-1].sum()  # nothing lost by the cut
    with pytest.raises(ValueError, match="one advantage per trajectory"):
        pack_trajectories(trajectories, [1.0], pad)
    with pytest.raises(ValueError, match="no trajectory left"):
        pack_trajectories(trajectories, [1.0, 2.0, 3.0], pad, keep=[False] * 3)
