"""What a Ctrl-C leaves behind: one line saying what the interrupted run saved and the command that resumes it.

``toolmaster.__main__`` prints ``interrupted_line`` (exit code 130) when a job is interrupted, instead of the
traceback of wherever the ``KeyboardInterrupt`` landed. The line is built from the run directory's files, so it
is true whatever the stage was doing: a training stage names its last checkpoint (``stage.resume=auto`` picks it
up), synthesis counts the episodes and finished tasks in its JSONL, a pipeline lists its finished steps, and
evaluation says that it writes only at the end. The resume command is the interrupted command line with
``hydra.run.dir`` pointing at the interrupted run's directory. Reads files only; never imports torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKPOINT = Path("checkpoints") / "last.ckpt"
DONE = ".done"


def resume_command(argv: Sequence[str], output_dir: Path) -> str:
    """``python -m toolmaster <argv>`` with ``hydra.run.dir`` set to the interrupted run's directory."""
    kept = [a for a in argv if not a.lstrip("+").startswith("hydra.run.dir=")]
    return shlex.join(["python", "-m", "toolmaster", *kept, f"hydra.run.dir={output_dir}"])


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.endswith(b"\n") and line.strip())


def saved_summary(stage: str, stage_cfg: Any, output_dir: Path) -> tuple[str, bool]:
    """What the interrupted run left on disk, and whether rerunning in ``output_dir`` resumes from it."""
    if stage in ("sft", "grpo"):
        checkpoint = output_dir / CHECKPOINT
        if checkpoint.is_file():
            return f"saved checkpoint {checkpoint}; the run resumes from it", True
        every = stage_cfg.get("checkpoint_every_n_steps")
        return f"no checkpoint saved yet (the first comes at step {every}); a rerun starts over", False
    if stage == "synthesize":
        out = Path(str(stage_cfg.get("output_path") or output_dir / "data.jsonl"))
        attempts = out.with_suffix(".attempts.jsonl")
        if not out.exists() and not attempts.exists():
            return "nothing saved yet", False
        episodes = _count_lines(out) if out.exists() else 0
        tasks = _count_lines(attempts) if attempts.exists() else 0
        return (
            f"saved {episodes} episodes of {tasks} finished tasks in {out}; the run resumes after them",
            True,
        )
    if stage == "pipeline":
        steps = list(stage_cfg.get("steps") or {})
        done = [name for name in steps if (output_dir / name / DONE).exists()]
        if not done:
            return "no step finished (each step's log is <run dir>/<step>/step.log)", False
        return f"finished steps kept: {', '.join(done)} ({len(done)}/{len(steps)}); the run skips them", True
    if stage == "eval":
        return "nothing saved (stage=eval writes its results when every episode is done)", False
    return f"see {output_dir}", False


def interrupted_line(cfg: Any, argv: Sequence[str]) -> str:
    """The one line printed for a Ctrl-C during the job of ``cfg`` (command line ``argv``)."""
    stage = str(cfg.stage.name)
    output_dir = Path(str(cfg.output_dir)).resolve()
    try:
        saved, resumable = saved_summary(stage, cfg.stage, output_dir)
    except Exception as exc:  # noqa: BLE001 - the summary must never replace the interrupt line with a traceback
        saved, resumable = f"see {output_dir} ({type(exc).__name__} while listing it)", False
    verb = "resume" if resumable else "rerun"
    return f"interrupted stage={stage}: {saved}; {verb} with: {resume_command(argv, output_dir)}"
