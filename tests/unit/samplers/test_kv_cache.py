"""The sampler's buffered KV cache: in-place appends, growth, merge, zero-copy trim, row copies, model parity."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from toolmaster.models import load_model
from toolmaster.samplers.kv_cache import (
    BufferedLayer,
    merge,
    new_cache,
    preload,
    row_kv,
    trim_left,
    trim_right,
)


def _kv(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, 2, length, 4, generator=torch.Generator().manual_seed(seed))


def test_appends_write_in_place_until_the_spare_room_runs_out():
    layer = BufferedLayer(spare=3)
    first, steps = _kv(2, 5), [_kv(2, 1, seed=s) for s in range(1, 6)]
    layer.update(first, first + 1)
    buffer = layer.key_buffer.data_ptr()
    for step in steps[:3]:
        keys, values = layer.update(step, step + 1)
        assert layer.key_buffer.data_ptr() == buffer  # no re-allocation within the spare room
    expected = torch.cat([first, *steps[:3]], dim=2)
    assert torch.equal(keys, expected) and torch.equal(values, expected + 1)
    keys, _ = layer.update(steps[3], steps[3] + 1)  # the fourth append grows the buffer once
    assert layer.key_buffer.data_ptr() != buffer and layer.capacity == 9 + 3
    assert torch.equal(keys, torch.cat([first, *steps[:4]], dim=2)) and layer.get_seq_length() == 9


def test_batch_select_and_crop_keep_the_views_consistent():
    layer = BufferedLayer(spare=2)
    kv = _kv(3, 4)
    layer.update(kv, kv)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, kv[[2, 0]])
    layer.length -= 1  # crop the last position
    layer._expose()
    assert torch.equal(layer.values, kv[[2, 0], :, :3]) and layer.get_seq_length() == 3


def _cache(keys: torch.Tensor, spare: int = 2) -> DynamicCache:
    cache = new_cache(spare)
    cache.update(keys, keys * 2, 0)
    return cache


def test_merge_left_pads_the_narrower_batch_and_trim_drops_masked_columns_without_copying():
    a, b = _kv(2, 5, seed=1), _kv(1, 3, seed=2)
    att_a, att_b = torch.ones(2, 5, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)
    att_a[1, :2] = 0
    merged, attention = merge((_cache(a), att_a), (_cache(b), att_b), spare=4)
    layer = merged.layers[0]
    assert torch.equal(layer.keys[:2], a) and torch.equal(layer.keys[2:, :, 2:], b)
    assert torch.equal(layer.values[2:, :, 2:], 2 * b) and not layer.keys[2:, :, :2].any()
    assert attention.tolist() == [[1] * 5, [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert layer.capacity == 5 + 4

    merged.batch_select_indices(torch.tensor([1, 2]))  # row 0 leaves: columns 0-1 are masked everywhere
    kept = attention[[1, 2]]
    buffer = merged.layers[0].key_buffer
    trimmed = trim_left(merged, kept)
    assert trimmed.tolist() == [[1, 1, 1]] * 2
    assert merged.layers[0].key_buffer.data_ptr() == buffer.data_ptr() + 2 * buffer.stride(2) * 4
    assert torch.equal(merged.layers[0].keys, torch.stack([a[1, :, 2:], b[0]]))


def test_trim_right_forgets_trailing_masked_columns_and_the_next_append_reuses_them():
    keys = _kv(2, 6)
    cache = _cache(keys, spare=4)
    buffer = cache.layers[0].key_buffer.data_ptr()
    attention = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0]])  # rejected drafts at the end
    trimmed = trim_right(cache, attention)
    assert trimmed.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]]  # row 1 keeps its position 4
    assert cache.layers[0].get_seq_length() == 5 and torch.equal(cache.layers[0].keys, keys[:, :, :5])
    step = _kv(2, 1, seed=9)
    cache.update(step, step, 0)
    assert cache.layers[0].key_buffer.data_ptr() == buffer  # written over the forgotten column
    assert torch.equal(cache.layers[0].keys[:, :, 5:], step)
    assert trim_right(cache, torch.ones(2, 6, dtype=torch.long)).shape == (2, 6)  # nothing to drop


def test_row_kv_copies_only_unmasked_positions_and_preload_right_aligns_them():
    keys = _kv(2, 6)
    cache = _cache(keys)
    attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    saved = row_kv(cache, 0, attention[0])
    assert torch.equal(saved[0][0], keys[:1, :, 2:]) and saved[0][0].data_ptr() != keys.data_ptr()
    fresh = new_cache(spare=1)
    preload(fresh, [saved, None], [4, 0], width=5, extra=2)
    layer = fresh.layers[0]
    assert layer.get_seq_length() == 5 and layer.capacity == 5 + 2 + 1
    assert torch.equal(layer.keys[0, :, 1:], keys[0, :, 2:]) and not layer.keys[1].any()


def test_model_decodes_identically_with_buffered_and_dynamic_caches():
    model = load_model(source="tiny", seed=2).model
    ids = torch.randint(10, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[0, :3] = 0
    with torch.inference_mode():
        outputs = []
        for cache in (DynamicCache(), new_cache(spare=2)):  # spare 2: the decode loop grows the buffer
            out = model(input_ids=ids, attention_mask=attention, past_key_values=cache, use_cache=True)
            logits, mask = [out.logits[:, -1]], attention
            for _ in range(4):
                mask = torch.cat([mask, mask.new_ones(2, 1)], dim=1)
                out = model(
                    input_ids=logits[-1].argmax(-1, keepdim=True),
                    attention_mask=mask,
                    past_key_values=cache,
                    use_cache=True,
                )
                logits.append(out.logits[:, -1])
            outputs.append(torch.stack(logits))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
