"""``python -m toolmaster [overrides]``: the Hydra entry point.

Before Hydra runs the job, the command line is pre-checked (``toolmaster.cli``): a config error is one line and
exit code 2. Errors the user can fix that happen later (a broken data file, a missing model package) are
``ToolMasterError``s and also end as one line, exit code 1. The job itself is ``toolmaster.run.run``.
"""

from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig

from toolmaster.cli import CONF_DIR, CONFIG_NAME, precheck
from toolmaster.errors import ToolMasterError


@hydra.main(config_path=CONF_DIR, config_name=CONFIG_NAME, version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from toolmaster.run import run

    try:
        return run(cfg)
    except ToolMasterError as exc:
        print(f"toolmaster: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main() -> None:
    # conf/hydra/launcher/submitit_local.yaml extends the plugin's config of the same name through Hydra's schema
    # matching, which still works in Hydra 1.3 but warns on every run.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against ConfigStore schema"
    )
    argv = sys.argv[1:]
    if not any(
        a in ("-h", "--help", "--hydra-help", "--info", "--version") or a.startswith("--shell") for a in argv
    ):
        problem = precheck(argv)
        if problem is not None:
            print(f"toolmaster: config error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
