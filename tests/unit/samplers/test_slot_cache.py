"""The slot KV cache: writes land at each row's own columns, subsets read the right slots, resizes keep data."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.slot_cache import SlotKV, as_model_mask, visible


def _states(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, 2, length, 4, generator=torch.Generator().manual_seed(seed))


def _write(kv: SlotKV, rows: list[int] | None, columns: list[list[int]], width: int, seed: int = 0):
    cols = torch.tensor(columns)
    kv.reserve(width)
    kv.set_plan(rows, cols, width)
    if not kv.layers:
        kv.cache.layers.append(kv.cache.layer_class_to_replicate())
    states = _states(len(columns), len(columns[0]), seed)
    keys, values = kv.layers[0].update(states, states + 1)
    return states, keys, values


def test_each_row_writes_its_own_columns_and_reads_the_visible_width():
    kv = SlotKV(slots=3, capacity=8, spare=2)
    states, keys, values = _write(kv, None, [[0], [2], [5]], width=6)
    assert keys.shape == values.shape == (3, 2, 6, 4)
    buffer, value_buffer = kv.layers[0].key_buffer, kv.layers[0].value_buffer
    for slot, column in enumerate([0, 2, 5]):
        assert torch.equal(buffer[slot, :, column], states[slot, :, 0])
        assert torch.equal(value_buffer[slot, :, column], states[slot, :, 0] + 1)
        others = [c for c in range(8) if c != column]
        assert not buffer[slot, :, others].any()  # nothing else written
    assert torch.equal(keys, buffer[:, :, :6]) and torch.equal(values, value_buffer[:, :, :6])


def test_a_subset_of_slots_reads_only_those_slots_contiguous_or_not():
    kv = SlotKV(slots=4, capacity=10, spare=0)
    _write(kv, None, [[0, 1]] * 4, width=2)  # every slot holds two columns
    before = kv.layers[0].key_buffer.clone()
    states, keys, _ = _write(kv, [1, 2], [[2, 3], [2, kv.scratch]], width=4, seed=1)  # a view
    assert keys.shape == (2, 2, 4, 4) and keys.data_ptr() == kv.layers[0].key_buffer[1].data_ptr()
    buffer = kv.layers[0].key_buffer
    assert torch.equal(buffer[1, :, 2:4], states[0])
    assert torch.equal(buffer[2, :, 2], states[1, :, 0]) and not buffer[2, :, 3].any()  # pad: scratch column
    assert torch.equal(buffer[[0, 3]], before[[0, 3]])  # other slots untouched
    states, keys, _ = _write(kv, [3, 0], [[2], [2]], width=3, seed=2)  # not contiguous: gathered
    assert torch.equal(keys[0], kv.layers[0].key_buffer[3, :, :3])
    assert torch.equal(keys[1], kv.layers[0].key_buffer[0, :, :3])


def test_growing_capacity_and_slots_and_dropping_slots_keep_the_contents():
    kv = SlotKV(slots=2, capacity=4, spare=3)
    states, _, _ = _write(kv, None, [[0, 1, 2], [0, 1, 2]], width=3)
    kv.reserve(4)  # 4 visible columns + the scratch column do not fit in 4
    assert kv.capacity == 4 + 1 + 3
    kv.add_slots(1)
    buffer = kv.layers[0].key_buffer
    assert buffer.shape == (3, 2, 8, 4) and not buffer[2].any()
    assert torch.equal(buffer[:2, :, :3], states)
    kv.keep_slots([1, 2])
    assert kv.slots == 2 and torch.equal(kv.layers[0].key_buffer[0, :, :3], states[1])


def test_dropping_slots_moves_the_kept_ones_in_place_and_a_new_slot_reuses_the_room():
    """``keep_slots`` copies only the slots behind the first dropped one, allocates nothing, and a pass
    after it reads only the kept slots; ``add_slots`` takes the room back before growing the buffers."""
    kv = SlotKV(slots=4, capacity=6, spare=0)
    states, _, _ = _write(kv, None, [[0, 1]] * 4, width=2)
    buffer = kv.layers[0].key_buffer
    pointer = buffer.data_ptr()
    kv.keep_slots([0, 2, 3])
    assert kv.slots == 3 and kv.layers[0].key_buffer.data_ptr() == pointer  # in place
    for new, old in enumerate([0, 2, 3]):
        assert torch.equal(buffer[new, :, :2], states[old])
    _, keys, _ = _write(kv, None, [[2]] * 3, width=3, seed=1)
    assert keys.shape[0] == 3  # the dropped room is not read
    assert torch.equal(keys[:, :, :2], states[[0, 2, 3]])
    kv.add_slots(1)  # back into the room: no new buffer
    assert kv.slots == 4 and kv.layers[0].key_buffer.data_ptr() == pointer
    kv.add_slots(1)  # beyond it: grown, the contents kept
    grown = kv.layers[0].key_buffer
    assert grown.shape[0] == 5 and grown.data_ptr() != pointer
    assert torch.equal(grown[:3, :, :2], states[[0, 2, 3]]) and not grown[4].any()
    with pytest.raises(ValueError, match=r"ascending order, got \[2, 0\]"):
        kv.keep_slots([2, 0])


def test_load_view_copy_round_trip():
    kv = SlotKV(slots=2, capacity=4, spare=0)
    saved = [(_states(1, 6, seed=s), _states(1, 6, seed=s + 10)) for s in range(3)]  # three layers
    kv.load(1, saved)  # before any forward pass: makes the layers, grows to fit
    assert len(kv.layers) == 3 and kv.capacity >= 7
    copy = kv.copy(1, 6)
    for (keys, values), (k, v) in zip(saved, copy):
        assert torch.equal(keys, k) and torch.equal(values, v)
    view = kv.view(1, 4)
    kv.layers[0].key_buffer[1, :, 0] += 1
    assert torch.equal(view[0][0][0, :, 0], saved[0][0][0, :, 0] + 1)  # a view
    assert torch.equal(copy[0][0], saved[0][0])  # a copy


def test_mask_shows_each_query_its_slot_up_to_its_own_column():
    mask = visible(torch.tensor([[2, 3], [0, 0]]), width=5)
    assert mask.shape == (2, 1, 2, 5)
    assert mask[0, 0].tolist() == [[True, True, True, False, False], [True, True, True, True, False]]
    assert mask[1, 0].tolist() == [[True, False, False, False, False]] * 2

    class Eager:
        class config:  # noqa: N801 - mimics a transformers config
            _attn_implementation = "eager"

    additive = as_model_mask(mask, Eager(), torch.float32)
    assert additive.dtype == torch.float32 and additive[0, 0, 0, 4] == torch.finfo(torch.float32).min
    assert additive[0, 0, 0, 0] == 0


def test_slots_may_hold_another_dtype_than_the_keys_come_in():
    """float32 slots of bf16 keys: writes are exact, reads come in float32, copies in the asked dtype."""
    kv = SlotKV(2, 8, 4, dtype=torch.float32)
    keys = torch.randn(2, 3, 1, 4).to(torch.bfloat16)
    kv.set_plan(None, torch.tensor([[0], [0]]), 1)
    layer = kv.cache.layer_class_to_replicate()
    kv.cache.layers.append(layer)
    read_keys, read_values = layer.update(keys, -keys)
    assert layer.key_buffer.dtype == torch.float32 and read_keys.dtype == torch.float32
    assert torch.equal(read_keys, keys.float()) and torch.equal(read_values, -keys.float())
    ((copied_keys, _),) = kv.copy(1, 1, torch.bfloat16)
    assert copied_keys.dtype == torch.bfloat16 and torch.equal(copied_keys, keys[1:2])
    assert kv.copy(1, 1)[0][0].dtype == torch.float32
