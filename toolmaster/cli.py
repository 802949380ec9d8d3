"""The command line's pre-check: compose and validate a command line's config before Hydra runs the job.

An unknown group option, an unknown key or a bad value becomes one line naming the key and the allowed values
(``precheck`` returns it; ``__main__`` prints it and exits with code 2) instead of a traceback. Every value of
every sweep (``a=1,2``) is checked, so a multirun cannot fail in its last job on a typo.

A top-level key that only a ``+key=value`` on the command line brings in is rejected: nothing reads it (config
groups and keys that experiment files add are composed by Hydra and pass). With ``local_paths=True`` (the
command line of ``python -m toolmaster``), a local ``model.path`` is checked before any model code is imported
(``toolmaster.model_dirs``); a pipeline's pre-check of its steps skips that, since their directories appear
only when earlier steps have run.

Composition here (``compose``) goes through Hydra's public compose API; inside a Hydra job (``stage=pipeline``
checks its steps' command lines) the job's own global Hydra instance is set aside for the composition and put
back after it.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from toolmaster.errors import ToolMasterError

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
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
    safe = [o for o in overrides if "=" in o and not o.split("=", 1)[0].lstrip("+~").startswith(parent + ".")]
    try:
        cfg = compose(safe)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return [str(k) for k in node if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
    except Exception:  # noqa: BLE001 - best effort hint only
        return []


def precheck(argv: list[str], local_paths: bool = False) -> str | None:
    """Compose and validate the command line's config (every sweep value); return a one-line error or None.
    ``local_paths``: also check that a local ``model.path`` is a model directory."""
    try:
        variants = sweep_variants(command_line_overrides(argv))
    except Exception as exc:  # noqa: BLE001 - hydra's override grammar errors
        return f"cannot parse overrides: {str(exc).strip().splitlines()[0]}"
    for overrides in variants:
        problem = _check_one(overrides, local_paths)
        if problem is not None:
            return problem
    return None


def _added_top_level_key(overrides: list[str], cfg: DictConfig) -> str | None:
    """A top-level key added by a ``+key=value`` override that is no config group: nothing reads it."""
    for override in overrides:
        if not override.startswith("+") or "=" not in override:
            continue
        key = override.split("=", 1)[0].lstrip("+")
        if "." in key or "/" in key or key == "hydra" or (Path(CONF_DIR) / key).is_dir():
            continue
        without = compose([o for o in overrides if o != override])
        if key in without:  # ++key=value on a key the config has
            continue
        known = ", ".join(sorted(str(k) for k in without))
        return f"unknown top-level key {key!r}: nothing reads it; top-level keys: {known}"
    return None


def _model_path_problem(cfg: DictConfig) -> str | None:
    from toolmaster.model_dirs import model_path_problem

    model = cfg.get("model")
    if not isinstance(model, DictConfig) or OmegaConf.is_missing(model, "path"):
        return None  # a missing path is validate's error
    raw = str(OmegaConf.to_container(model, resolve=False).get("path"))
    if "output_dir" in raw or "hydra:" in raw:
        return None  # known only when the job runs
    try:
        path, source = model.get("path"), model.get("source", "hf")
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is validate's error
        return None
    return model_path_problem(None if path is None else str(path), str(source))


def _check_one(overrides: list[str], local_paths: bool = False) -> str | None:
    from toolmaster.config import validate

    try:
        cfg = compose(overrides)
    except Exception as exc:  # noqa: BLE001 - every composition error becomes one line
        return _one_line_hydra_error(exc, overrides)
    problem = _added_top_level_key(overrides, cfg)
    if problem is not None:
        return problem
    if "output_dir" in cfg and "hydra:" in str(OmegaConf.to_container(cfg, resolve=False).get("output_dir")):
        cfg.output_dir = "."  # resolved by Hydra at run time
    if local_paths:
        problem = _model_path_problem(cfg)
        if problem is not None:
            return problem
    try:
        validate(cfg)
    except ToolMasterError as exc:
        return str(exc)
    return None


def compose(overrides: list[str], config_name: str = CONFIG_NAME) -> DictConfig:
    """The job config of a command line's overrides (no ``hydra`` node), from Hydra's public compose API.

    ``hydra.initialize_config_dir`` refuses to start while a Hydra application holds the global instance (the
    running job of ``stage=pipeline``), so that instance is set aside for the composition and put back after.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
        if running is not None:
            GlobalHydra.instance().initialize(running)
