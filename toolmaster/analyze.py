"""Explain evaluation results from the saved episodes: ``python -m toolmaster.analyze <run dir>``.

Reads ``trajectories/<split>.jsonl`` (one ``Trajectory.to_dict()`` per line, as ``stage=eval`` writes them) of
one eval run dir (one arm, named by its folder) or of a pipeline or sweep run dir (every subfolder holding an
eval's ``metrics.json`` and its episodes is an arm, e.g. ``eval_base``, ``eval_sft``, ``eval_grpo``). A GRPO run
with validation is an arm too: its ``metrics.json`` comes from the final validation, whose episodes are in
``val_trajectories/<split>.jsonl`` (read instead of ``trajectories/``, which holds the logged training rollouts;
a GRPO step without validation is no arm). It reports per split and arm,
each as a rate over the arm's episodes with its count. The definitions are heuristics over the recorded
calls; they say what the episodes show, not why the model acted:

- ``used_trial``: the episode has an execution call to a tool after a trial call to the same tool, and either
  (a) *revealed format/value*: some earlier trial of that tool failed, the execution call's arguments differ
  from every failed trial's arguments, and one of the execution call's string tokens (a string argument
  value, or a piece of one split on whitespace and commas, at least 2 characters; compared case-insensitively)
  occurs in an earlier trial observation of the episode but neither in the task query (the first user
  message) nor in the tool's JSON schema, e.g. a format like ``l:ml`` that an error message listed; or
  (b) *silent convention*: the execution call succeeded after a successful trial of that tool (the expert
  probes a convention that results, not errors, expose). (b) is generous: it also counts an execution that
  merely repeats a tool the model had tried, so read ``used_trial`` with ``exec_after_trial`` beside it;
  ``analysis.json`` also has ``used_trial_revealed``, the count of (a) alone.
- ``exec_after_trial`` (the simpler count): some execution call succeeded after at least one trial of the
  same tool.
- ``repeated_failure``: the same call (name and arguments, either phase) failed twice or more in one episode.
- ``answer_from_obs``: the final answer (stripped; a number is compared as a float at 4 significant digits
  with the numbers in the observations, other text as a case-insensitive substring) occurs in some tool
  observation of the episode; ``answer_not_from_obs``: it has an answer that does not; episodes without an
  answer are in neither.
- ``truncated``: the episode was cut (``Trajectory.truncation_reason``); the count per reason is in
  ``analysis.json`` and the table (turns = ``max_turns``, tokens = ``max_total_tokens``, per-turn =
  ``max_new_tokens``, steps = ``max_steps_per_user_turn``, prompt = ``prompt_too_long``).
- ``decoy_use``: some call went to a tool the task marks as its decoy (``Task.metadata["decoy"]``,
  toolworld). Trajectories do not carry task metadata, so the tasks are rebuilt from the arm's saved
  Hydra config (``.hydra/config.yaml``, node ``tools.world``); where that fails or the tasks carry no
  ``decoy`` key (other worlds, older builds) decoy use is unknown and shown as ``n/a``.

Per feedback level (``by_feedback`` in ``analysis.json``, a second table per split in ``analysis.md``): the
episodes of each split and arm grouped by how much their task's tool feedback reveals
(``Task.metadata["feedback"]`` of toolworld, looked up by task id in the same rebuilt tasks:
``silent``, ``example``, ``names_fix``, ``none``; see ``toolmaster/worlds/toolworld/feedback.py``), each
with its episodes and the counts of ``success`` (with its 95% Wilson interval), ``repeated_failure`` and
``used_trial``. Episodes whose task has no recorded level (other worlds, older builds, tasks not rebuilt)
are under ``n/a``; the table is left out of a split where no episode has a level. ``used_trial``'s branch (a)
needs a token copied from a trial observation, so it undercounts at the ``example`` level, where the caller
adapts what the error showed ('EMP-0007' -> 'EMP-0042') rather than copying it: read it beside ``success``.

Writes ``<dir>/analysis.md`` and ``<dir>/analysis.json`` and prints the tables. Bad input (no trajectories,
an unreadable line) prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from toolmaster.errors import DataError
from toolmaster.io import read_jsonl, write_json_atomic, write_text_atomic
from toolmaster.protocol.phases import Phase
from toolmaster.trajectory import Call, Trajectory
from toolmaster.worlds.toolworld.feedback import ALL_LEVELS

METRICS = ("used_trial", "exec_after_trial", "repeated_failure", "answer_from_obs", "answer_not_from_obs")
REASON_LABELS = {
    "max_turns": "turns",
    "max_total_tokens": "tokens",
    "max_new_tokens": "per-turn",
    "max_steps_per_user_turn": "steps",
    "prompt_too_long": "prompt",
}
CALL_KEYS = frozenset({"phase", "name", "arguments", "observation", "ok"})
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
Decoys = Mapping[str, frozenset[str]]  # task id -> decoy tool names (a task missing here: unknown)
Levels = Mapping[str, str]  # task id -> feedback level (a task missing here: unknown, "n/a")
UNKNOWN_LEVEL = "n/a"
LEVEL_METRICS = ("success", "repeated_failure", "used_trial")  # counted per feedback level


# ------------------------------------------------------------------------------------ per episode
def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _tokens(arguments: Any) -> set[str]:
    out: set[str] = set()
    for text in _strings(arguments):
        for piece in [text, *re.split(r"[\s,]+", text)]:
            piece = piece.strip().lower()
            if len(piece) >= 2:
                out.add(piece)
    return out


def _query(traj: Trajectory) -> str:
    return next((m["content"] for m in traj.messages if m.get("role") == "user"), "")


def _schema_text(traj: Trajectory, name: str | None) -> str:
    for schema in traj.tools:
        function = schema.get("function", schema)
        if function.get("name") == name:
            return json.dumps(schema).lower()
    return ""


def _trial_uses(traj: Trajectory) -> tuple[bool, bool]:
    """(revealed format/value (a), silent convention (b)) of the module docstring."""
    query = _query(traj).lower()
    revealed = silent = False
    for j, call in enumerate(traj.calls):
        if call["phase"] != Phase.EXECUTION:
            continue
        earlier = traj.calls[:j]
        trials = [c for c in earlier if c["phase"] == Phase.TRIAL and c["name"] == call["name"]]
        if not trials:
            continue
        silent = silent or (call["ok"] and any(t["ok"] for t in trials))
        failed = [t for t in trials if not t["ok"]]
        if not failed or any(t["arguments"] == call["arguments"] for t in failed):
            continue
        seen = " ".join(c["observation"] for c in earlier if c["phase"] == Phase.TRIAL).lower()
        schema = _schema_text(traj, call["name"])
        tokens = _tokens(call["arguments"])
        revealed = revealed or any(t in seen and t not in query and t not in schema for t in tokens)
    return revealed, silent


def revealed_by_trial(traj: Trajectory) -> bool:
    """(a): an execution call carries a token that only an earlier failed trial's episode observations showed."""
    return _trial_uses(traj)[0]


def used_trial(traj: Trajectory) -> bool:
    """(a) or (b) of the module docstring."""
    return any(_trial_uses(traj))


def exec_after_trial(traj: Trajectory) -> bool:
    tried: set[str | None] = set()
    for call in traj.calls:
        if call["phase"] == Phase.TRIAL:
            tried.add(call["name"])
        elif call["ok"] and call["name"] in tried:
            return True
    return False


def repeated_failure(traj: Trajectory) -> bool:
    failures = Counter(
        (c["name"], json.dumps(c["arguments"], sort_keys=True, default=str))
        for c in traj.calls
        if not c["ok"]
    )
    return any(count >= 2 for count in failures.values())


def _round4(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 3 - math.floor(math.log10(abs(value))))


def answer_from_obs(answer: str | None, calls: list[Call]) -> bool | None:
    """True / False as the module docstring says; None without an answer."""
    if answer is None or not str(answer).strip():
        return None
    text = str(answer).strip()
    try:
        target: float | None = _round4(float(text))
    except ValueError:
        target = None
    for call in calls:
        observation = call["observation"]
        if target is None:
            if text.lower() in observation.lower():
                return True
        elif any(_round4(float(n)) == target for n in NUMBER.findall(observation)):
            return True
    return False


def decoy_used(traj: Trajectory, decoys: Decoys) -> bool | None:
    names = decoys.get(traj.task_id)
    if names is None:
        return None
    return any(c["name"] in names for c in traj.calls)


# ------------------------------------------------------------------------------------ per arm
def by_feedback(trajs: list[Trajectory], levels: Levels) -> dict[str, dict[str, Any]]:
    """Feedback level -> {episodes, success, success_ci95, repeated_failure, used_trial} (counts, and the
    95% Wilson interval of the success rate, None when no task's level is known), in the order silent,
    example, names_fix, none, n/a."""
    groups: dict[str, list[Trajectory]] = {}
    for traj in trajs:
        groups.setdefault(levels.get(traj.task_id, UNKNOWN_LEVEL), []).append(traj)
    order = [*ALL_LEVELS, UNKNOWN_LEVEL]
    rows: dict[str, dict[str, Any]] = {}
    for level in sorted(groups, key=lambda name: (order.index(name) if name in order else len(order), name)):
        group = groups[level]
        success = sum(t.correct for t in group)
        rows[level] = {
            "episodes": len(group),
            "success": success,
            "success_ci95": _wilson(success, len(group)) if levels else None,
            "repeated_failure": sum(repeated_failure(t) for t in group),
            "used_trial": sum(used_trial(t) for t in group),
        }
    return rows


def _wilson(successes: int, episodes: int) -> list[float]:
    from toolmaster.sweep import wilson_interval  # here: toolmaster.sweep imports torchmetrics (seconds)

    return [round(bound, 4) for bound in wilson_interval(successes, episodes)]


def summarize(trajs: list[Trajectory], decoys: Decoys, levels: Levels | None = None) -> dict[str, Any]:
    """One row: episodes, success and every metric's count (rates are count / episodes), and the same per
    feedback level of the tasks (``by_feedback``; every episode under ``n/a`` without ``levels``)."""
    row: dict[str, Any] = {
        "episodes": len(trajs),
        "success": sum(t.correct for t in trajs),
        "used_trial": sum(used_trial(t) for t in trajs),
        "used_trial_revealed": sum(revealed_by_trial(t) for t in trajs),
        "exec_after_trial": sum(exec_after_trial(t) for t in trajs),
        "repeated_failure": sum(repeated_failure(t) for t in trajs),
    }
    from_obs = [answer_from_obs(t.answer, t.calls) for t in trajs]
    row["answer_from_obs"] = sum(v is True for v in from_obs)
    row["answer_not_from_obs"] = sum(v is False for v in from_obs)
    reasons = Counter(t.truncation_reason or "unknown" for t in trajs if t.truncated or t.truncation_reason)
    row["truncated"] = sum(reasons.values())
    row["truncation_reasons"] = dict(sorted(reasons.items()))
    decoy = [decoy_used(t, decoys) for t in trajs]
    known = [v for v in decoy if v is not None]
    row["decoy_use"] = sum(known) if known else None
    row["decoy_known"] = len(known)
    row["by_feedback"] = by_feedback(trajs, levels or {})
    return row


def _rate(count: int | None, total: int) -> str:
    if count is None or total == 0:
        return "n/a"
    return f"{count / total:.2f} ({count})"


def _success_cell(row: dict[str, Any]) -> str:
    cell = _rate(row["success"], row["episodes"])
    if row.get("success_ci95") is None:
        return cell
    low, high = row["success_ci95"]
    return f"{cell} [{low:.2f}, {high:.2f}]"


LEVEL_LEGEND = (
    "Feedback level of the task (toolworld): silent = only a trial with a known input reveals the convention; "
    "example = an error quotes an example to adapt; names_fix = an error states the fix; none = no hidden "
    "convention; n/a = unknown. Success with its 95% Wilson interval."
)


def feedback_table(split: str, arms: dict[str, dict[str, Any]]) -> list[str]:
    """The per-level lines of one split (none when no episode of it has a known level)."""
    if all(set(row.get("by_feedback", {})) <= {UNKNOWN_LEVEL} for row in arms.values()):
        return []
    lines = [f"### {split} by feedback level", "", LEVEL_LEGEND, ""]
    lines.append("| arm | level | episodes | " + " | ".join(LEVEL_METRICS) + " |")
    lines.append("|---" * (len(LEVEL_METRICS) + 3) + "|")
    for arm, row in arms.items():
        for level, cell in row.get("by_feedback", {}).items():
            n = cell["episodes"]
            cells = [_success_cell(cell), *(_rate(cell[m], n) for m in LEVEL_METRICS[1:])]
            lines.append(f"| {arm} | {level} | {n} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(report: dict[str, dict[str, dict[str, Any]]], title: str) -> str:
    columns = ["success", *METRICS, "truncated", "decoy_use"]
    lines = [f"# {title}", ""]
    for split, arms in report.items():
        lines += [f"## {split}", "", "| arm | episodes | " + " | ".join(columns) + " |"]
        lines.append("|---" * (len(columns) + 2) + "|")
        for arm, row in arms.items():
            n = row["episodes"]
            cells = [_rate(row[c], n) for c in columns[:-2]]
            truncated = _rate(row["truncated"], n)
            if row["truncation_reasons"]:
                parts = [f"{REASON_LABELS.get(r, r)} {k}" for r, k in row["truncation_reasons"].items()]
                truncated += " " + ", ".join(parts)
            cells.append(truncated)
            cells.append(_rate(row["decoy_use"], row["decoy_known"]) if row["decoy_known"] else "n/a")
            lines.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += feedback_table(split, arms)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ reading a run
EPISODE_DIRS = ("val_trajectories", "trajectories")  # a GRPO run's final validation first, else eval's


def episode_dir(folder: Path) -> Path | None:
    """Where ``folder``'s evaluated episodes are: ``val_trajectories/`` (GRPO) or ``trajectories/`` (eval)."""
    return next((folder / name for name in EPISODE_DIRS if (folder / name).is_dir()), None)


def find_arms(run_dir: Path) -> dict[str, Path]:
    """Arm name -> folder: the dir itself when it holds episodes, else each subfolder that holds episodes and
    metrics.json (an eval step or a validated GRPO run; a GRPO step's rollout log alone is not an arm)."""
    if episode_dir(run_dir) is not None:
        return {run_dir.resolve().name: run_dir}
    return {
        p.name: p
        for p in sorted(run_dir.iterdir())
        if episode_dir(p) is not None and (p / "metrics.json").is_file()
    }


def load_trajectories(arm_dir: Path) -> dict[str, list[Trajectory]]:
    out: dict[str, list[Trajectory]] = {}
    folder = episode_dir(arm_dir)
    for path in sorted(folder.glob("*.jsonl")) if folder is not None else ():
        trajs = []
        for number, record in enumerate(read_jsonl(path, allow_partial_tail=False), start=1):
            try:
                traj = Trajectory.from_dict(record)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}: record {number} is not a trajectory ({exc})") from None
            for call in traj.calls:
                if not isinstance(call, dict) or not set(call) >= CALL_KEYS:
                    raise DataError(
                        f"{path}: record {number} has a call without {', '.join(sorted(CALL_KEYS))}"
                    )
            trajs.append(traj)
        out[path.stem] = trajs
    return out


TaskInfo = dict[str, tuple[Decoys, Levels]]  # world config (JSON) -> its tasks' decoys and feedback levels


def load_task_info(arm_dir: Path, cache: TaskInfo) -> tuple[Decoys, Levels]:
    """(task id -> decoy names, task id -> feedback level) from the world the arm's Hydra config builds;
    both empty when that is not possible, and a task without the metadata key is missing from its map."""
    config = arm_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return {}, {}
    try:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(config)
        node = cfg.tools.world
        key = json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)
        if key not in cache:
            world = instantiate(node, _convert_="all")
            tasks = [task for split_tasks in world.splits.values() for task in split_tasks]
            cache[key] = (
                {t.id: frozenset(t.metadata["decoy"]) for t in tasks if "decoy" in t.metadata},
                {t.id: str(t.metadata["feedback"]) for t in tasks if "feedback" in t.metadata},
            )
        return cache[key]
    except Exception as exc:  # any failure to rebuild the world only makes decoys and levels unknown
        problem = f"{type(exc).__name__}: {exc}"
        print(f"note: {arm_dir.name}: decoy use and feedback levels unknown (tasks not rebuilt: {problem})")
        return {}, {}


def analyze(run_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """split -> arm -> row for an eval or pipeline run dir; writes analysis.md / analysis.json there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory")
    arms = find_arms(run_dir)
    cache: TaskInfo = {}
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, arm_dir in arms.items():
        decoys, levels = load_task_info(arm_dir, cache)
        for split, trajs in load_trajectories(arm_dir).items():
            report.setdefault(split, {})[arm] = summarize(trajs, decoys, levels)
    if not report:
        raise DataError(f"{run_dir}: no trajectories/<split>.jsonl found (in it or in its subfolders)")
    write_json_atomic(run_dir / "analysis.json", report)
    write_text_atomic(run_dir / "analysis.md", markdown(report, f"Trajectory analysis of {run_dir.name}"))
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m toolmaster.analyze <eval or pipeline run dir>")
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        report = analyze(args[0])
    except DataError as exc:
        print(f"error: {exc}")
        return 2
    print(markdown(report, f"Trajectory analysis of {Path(args[0]).name}"))
    print(f"wrote {Path(args[0]) / 'analysis.md'}, {Path(args[0]) / 'analysis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
