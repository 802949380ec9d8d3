"""``python -m toolmaster [overrides]``: the Hydra entry point.

Every way a run can end early is one line on stderr and an exit code:

- 2, ``toolmaster: config error: ...``: the command line's pre-check (``toolmaster.cli``) found a bad config, or
  the job raised a ``ConfigError`` (a model path without weights, a custom world's broken spec, ...);
- 1, ``toolmaster: error: ...``: any other ``ToolMasterError`` (a broken data file, a failed pipeline step);
- 130, ``toolmaster: interrupted ...``: Ctrl-C (SIGINT) anywhere; the line says what the run saved and the command
  that resumes it (``toolmaster.interrupts``). Lightning turns a Ctrl-C during ``fit`` into ``sys.exit(1)``; the
  SIGINT handler installed here remembers the signal, so that exit is reported as the interrupt it is.

Errors raised while Hydra instantiates a ``_target_`` node arrive wrapped in Hydra's ``InstantiationException``;
they are unwrapped to the error that caused them (``HYDRA_FULL_ERROR=1`` keeps Hydra's full report for debugging).
The job itself is ``toolmaster.run.run``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from types import FrameType

import hydra
from omegaconf import DictConfig

from toolmaster.cli import CONF_DIR, CONFIG_NAME, precheck
from toolmaster.errors import ConfigError, ToolMasterError

_INFO_FLAGS = ("-h", "--help", "--hydra-help", "--info", "--version")
_interrupted = False
_CHATTY_ON_INTERRUPT = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """First Ctrl-C: remember it and raise ``KeyboardInterrupt``; later ones are ignored while shutting down."""
    global _interrupted
    _interrupted = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _CHATTY_ON_INTERRUPT:  # "Detected KeyboardInterrupt, attempting graceful shutdown ..."
        logging.getLogger(name).setLevel(logging.WARNING)
    raise KeyboardInterrupt


def _say(line: str) -> None:
    """One line on stderr, on a line of its own even after a progress bar's carriage returns."""
    lead = "\n" if sys.stderr.isatty() else ""
    print(f"{lead}toolmaster: {line}", file=sys.stderr, flush=True)


def _root_cause(exc: BaseException) -> BaseException:
    """The error behind Hydra's ``InstantiationException`` wrappers (nested nodes wrap once per level)."""
    from hydra.errors import InstantiationException

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _exit_for(exc: BaseException) -> SystemExit:
    """Print ``exc`` as one line and return the exit to raise (2 for config errors, else 1)."""
    if isinstance(exc, ConfigError):
        _say(f"config error: {exc}")
        return SystemExit(2)
    if isinstance(exc, ToolMasterError):
        _say(f"error: {exc}")
        return SystemExit(1)
    first = (str(exc).strip().splitlines() or [""])[0]
    _say(f"error: {type(exc).__name__}: {first}")
    return SystemExit(1)


def _interrupt_exit(cfg: DictConfig) -> SystemExit:
    from toolmaster.interrupts import interrupted_line

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        _say(interrupted_line(cfg, sys.argv[1:]))  # DDP's other processes get the SIGINT too: rank 0 speaks
    return SystemExit(130)


@hydra.main(config_path=CONF_DIR, config_name=CONFIG_NAME, version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.errors import InstantiationException

    from toolmaster.run import run

    try:
        return run(cfg)
    except KeyboardInterrupt:
        raise _interrupt_exit(cfg) from None
    except SystemExit:
        if _interrupted:  # Lightning's sys.exit(1) after it caught the Ctrl-C
            raise _interrupt_exit(cfg) from None
        raise
    except ToolMasterError as exc:
        raise _exit_for(exc) from None
    except InstantiationException as exc:
        cause = _root_cause(exc)
        if isinstance(cause, ToolMasterError) or not os.environ.get("HYDRA_FULL_ERROR"):
            raise _exit_for(cause) from None
        raise


def main() -> None:
    # conf/hydra/launcher/submitit_local.yaml extends the plugin's config of the same name through Hydra's schema
    # matching, which still works in Hydra 1.3 but warns on every run.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against ConfigStore schema"
    )
    signal.signal(signal.SIGINT, _on_sigint)
    argv = sys.argv[1:]
    try:
        if not any(a in _INFO_FLAGS or a.startswith("--shell") for a in argv):
            # a command that only prints its config (--cfg/-c, --resolve) loads no model: skip the model.path check
            prints_config = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
            problem = precheck(argv, local_paths=not prints_config)
            if problem is not None:
                _say(f"config error: {problem}")
                raise SystemExit(2)
        _hydra_main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say("interrupted before the run started; nothing was saved")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
