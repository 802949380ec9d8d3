"""``stage=synthesize``: a teacher plays training tasks; kept episodes become a JSONL SFT dataset.

Files (next to ``stage.output_path``, default ``<run dir>/data.jsonl``):
- ``data.jsonl``: one kept episode per line: task id, split, teacher, reward, correct, trial / execution
  call counts, ``messages`` and ``tools`` (the SFT format), calls and answer;
- ``data.attempts.jsonl``: one line per finished task (samples, correct, kept, duplicates);
- ``data.summary.json``: counts over all attempts, rewritten atomically after every chunk.

Resumable and kill-safe: lines are appended and fsynced chunk by chunk, the dataset line before the
attempt line; on start a torn last line is cut off and tasks already in the attempts file are skipped.
A task killed between its two writes has episodes in the dataset but no attempt line: on start those
episodes are removed (with a warning) and the task is replayed, so the counts in the summary always equal
the dataset's lines, whatever the teacher samples the second time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from toolmaster.build import build_rewards, build_settings, build_world
from toolmaster.io import append_jsonl, read_jsonl, repair_jsonl, write_json_atomic, write_jsonl_atomic
from toolmaster.protocol.chat_format import get_chat_format
from toolmaster.settings import DataSettings, SynthesizeSettings
from toolmaster.teachers.base import PlayRequest, Teacher
from toolmaster.trajectory import Trajectory

log = logging.getLogger(__name__)


def dedupe_key(record: dict[str, Any]) -> str:
    turns = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    return hashlib.sha1(json.dumps([record["task_id"], turns]).encode()).hexdigest()


def dataset_record(t: Trajectory, teacher: str) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "split": t.split,
        "teacher": teacher,
        "sample_index": t.sample_index,
        "reward": t.reward,
        "correct": t.correct,
        "num_trial_calls": t.num_trial_calls,
        "num_execution_calls": t.num_execution_calls,
        "trial_budget": t.trial_budget,
        "answer": t.answer,
        "messages": t.messages,
        "tools": t.tools,
        "calls": t.calls,
    }


def summarize_attempts(attempts: list[dict[str, Any]], teacher: str) -> dict[str, Any]:
    samples = sum(a["samples"] for a in attempts)
    return {
        "teacher": teacher,
        "tasks": len(attempts),
        "samples": samples,
        "correct": sum(a["correct"] for a in attempts),
        "kept": sum(a["kept"] for a in attempts),
        "dropped_by_filter": sum(a["dropped"] for a in attempts),
        "duplicates": sum(a["duplicates"] for a in attempts),
        "success_rate": sum(a["correct"] for a in attempts) / max(samples, 1),
        "mean_trial_calls": sum(a["trial_calls"] for a in attempts) / max(samples, 1),
        "mean_execution_calls": sum(a["execution_calls"] for a in attempts) / max(samples, 1),
    }


def drop_unrecorded(out: Path, done: set[str]) -> list[dict[str, Any]]:
    """The dataset's records, after removing those of tasks without an attempt line (killed between the two
    writes; the task is replayed)."""
    if not out.exists():
        return []
    records = list(read_jsonl(out))
    kept = [r for r in records if r["task_id"] in done]
    if len(kept) < len(records):
        orphans = {r["task_id"] for r in records if r["task_id"] not in done}
        log.warning(
            "removed %d episode(s) of %d task(s) from %s whose attempt line is missing (killed between the "
            "two writes); those tasks are replayed",
            len(records) - len(kept),
            len(orphans),
            out,
        )
        write_jsonl_atomic(out, kept)
    return kept


def run(cfg: DictConfig) -> float:
    """``stage=synthesize``; returns the fraction of sampled attempts kept as data."""
    stage: SynthesizeSettings = build_settings(cfg.stage)
    data: DataSettings = build_settings(cfg.data)
    world, env = build_world(cfg)
    tasks = data.train_tasks(world)
    teacher: Teacher = instantiate(cfg.teacher, _convert_="all")
    fmt = get_chat_format(cfg.model.chat_format)
    rewards = build_rewards(cfg)
    tokenizer = None
    if not hasattr(teacher, "kind"):  # chat-API teachers count tokens in the student's vocabulary
        from toolmaster.models.loading import load_tokenizer

        tokenizer = load_tokenizer(
            **{k: v for k, v in cfg.model.items() if k in ("source", "path", "cache_dir")}
        )

    out = Path(stage.output_path)
    attempts_path = out.with_suffix(".attempts.jsonl")
    summary_path = out.with_suffix(".summary.json")
    for path in (out, attempts_path):
        cut = repair_jsonl(path)
        if cut:
            log.warning("cut a torn last line (%d bytes) from %s", cut, path)
    attempts = list(read_jsonl(attempts_path)) if attempts_path.exists() else []
    done = {a["task_id"] for a in attempts}
    records = drop_unrecorded(out, done)
    seen = {dedupe_key(r) for r in records}
    todo = [task for task in tasks if task.id not in done]
    log.info("synthesize: %d tasks, %d already done, %d to go", len(tasks), len(done), len(todo))

    with tqdm(total=len(todo) * stage.samples_per_task, desc=f"synthesize ({teacher.name})") as bar:
        for start in range(0, len(todo), stage.chunk_size):
            chunk = todo[start : start + stage.chunk_size]
            request = PlayRequest(
                world,
                chunk,
                env.trial_budget,
                fmt,
                stage.samples_per_task,
                timeout_s=env.timeout_s,
                max_observation_chars=env.max_observation_chars,
                tokenizer=tokenizer,
            )
            trajs = teacher.play(request, progress=bar.update)
            rewards.score(trajs, {task.id: task for task in chunk})
            kept, new_attempts = [], []
            for task in chunk:
                mine = [t for t in trajs if t.task_id == task.id]
                stats = {
                    "task_id": task.id,
                    "samples": len(mine),
                    "correct": sum(t.correct for t in mine),
                    "kept": 0,
                    "dropped": 0,
                    "duplicates": 0,
                    "trial_calls": sum(t.num_trial_calls for t in mine),
                    "execution_calls": sum(t.num_execution_calls for t in mine),
                }
                for t in mine:
                    if stage.keep == "correct" and not t.correct:
                        stats["dropped"] += 1
                        continue
                    record = dataset_record(t, teacher.name)
                    key = dedupe_key(record)
                    if stage.dedupe and key in seen:
                        stats["duplicates"] += 1
                        continue
                    seen.add(key)
                    kept.append(record)
                    stats["kept"] += 1
                new_attempts.append(stats)
            append_jsonl(out, kept)
            append_jsonl(attempts_path, new_attempts)
            attempts += new_attempts
            write_json_atomic(summary_path, summarize_attempts(attempts, teacher.name))
    summary = summarize_attempts(attempts, teacher.name)
    write_json_atomic(summary_path, summary)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out} ({summary['kept']} episodes)")
    return summary["kept"] / max(summary["samples"], 1)
