"""``python -m toolmaster [overrides]``: the Hydra entry point.

Before Hydra runs the job, the command line is composed once and validated (``toolmaster.config``) so that
an unknown group option, an unknown key or a bad value fails with one line naming the key and the allowed
values, and exit code 2, instead of a traceback. Errors the user can fix that happen later (a broken data
file, a missing model package) are ``ToolMasterError``s and also end as one line, exit code 1.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from toolmaster.errors import ToolMasterError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
CONFIG_NAME = "train"
_FLAGS_WITH_VALUE = {
    "-c",
    "--cfg",
    "-p",
    "--package",
    "-cn",
    "--config-name",
    "-cp",
    "--config-path",
    "-cd",
    "--config-dir",
    "--info",
    "--experimental-rerun",
}


def command_line_overrides(argv: list[str]) -> list[str]:
    """The override arguments of a Hydra command line (flags and their values dropped)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-") or "=" not in arg:
            continue
        out.append(arg)
    return out


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """Override lists that together cover every value of every sweep (``a=1,2``, ``range(...)``):
    the first list takes each sweep's first value, then each further value is tried with the others' first."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base = list(overrides)
    values: dict[int, list[str]] = {}
    for i, override in enumerate(parsed):
        if override.is_sweep_override():
            key = override.get_key_element()
            values[i] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            base[i] = values[i][0]
    variants = [base]
    for i, options in values.items():
        for option in options[1:]:
            variant = list(base)
            variant[i] = option
            variants.append(variant)
    return variants


def first_of_sweeps(overrides: list[str]) -> list[str]:
    return sweep_variants(overrides)[0]


def _one_line_hydra_error(exc: Exception, overrides: list[str]) -> str:
    text = str(exc)
    missing = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
    if missing:
        group, name = missing.groups()
        options = _group_options(group)
        return f"no option {name!r} in config group {group!r}; available: {', '.join(options) or 'none'}"
    not_in_struct = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if not_in_struct:
        key = not_in_struct.group(1)
        full = re.search(r"full_key: (\S+)", text)
        key = full.group(1) if full else key
        parent, _, leaf = key.rpartition(".")
        allowed = _keys_at(parent, overrides)
        hint = f"; keys under {parent or 'the root'}: {', '.join(allowed)}" if allowed else ""
        return f"unknown config key {key!r}{hint} (add a new key with +{key}=...)"
    return text.strip().splitlines()[0]


def _group_options(group: str) -> list[str]:
    path = Path(CONF_DIR) / group
    names = sorted(p.stem for p in path.glob("*.yaml")) if path.is_dir() else []
    if group == "hydra/launcher":
        names = sorted(set(names) | {"basic", "submitit_local", "submitit_slurm"})
    return names


def _keys_at(parent: str, overrides: list[str]) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    safe = [o for o in overrides if "=" in o and not o.split("=", 1)[0].lstrip("+~").startswith(parent + ".")]
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=safe)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return [str(k) for k in node if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
    except Exception:  # noqa: BLE001 - best effort hint only
        return []
    finally:
        GlobalHydra.instance().clear()


def precheck(argv: list[str]) -> str | None:
    """Compose and validate the command line's config (every sweep value); return a one-line error or None."""
    try:
        variants = sweep_variants(command_line_overrides(argv))
    except Exception as exc:  # noqa: BLE001 - hydra's override grammar errors
        return f"cannot parse overrides: {str(exc).strip().splitlines()[0]}"
    for overrides in variants:
        problem = _check_one(overrides)
        if problem is not None:
            return problem
    return None


def _check_one(overrides: list[str]) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from toolmaster.config import validate

    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=False)
    except Exception as exc:  # noqa: BLE001 - every composition error becomes one line
        return _one_line_hydra_error(exc, overrides)
    finally:
        GlobalHydra.instance().clear()
    if "output_dir" in cfg and "hydra:" in str(OmegaConf.to_container(cfg, resolve=False).get("output_dir")):
        cfg.output_dir = "."  # resolved by Hydra at run time
    try:
        validate(cfg)
    except ToolMasterError as exc:
        return str(exc)
    return None


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
