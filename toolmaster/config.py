"""Config validation: every ``_target_`` node is bound against its callable's signature, without building it.

Binding catches unknown keys (with the accepted ones listed), missing required arguments and values of the
wrong type (checked against the type hints: int, float, str, bool, Literal choices, lists, dicts,
Optional), plus the value ranges of ``RANGES`` (Lightning's Trainer checks its own only once the data has
loaded). Dataclass targets are also instantiated, which runs their ``__post_init__`` range checks; they
are cheap config records. Errors are ``ConfigError``s with one line naming the full key path.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from toolmaster.errors import ConfigError, ToolMasterError


def import_target(path: str, where: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}._target_={path!r} cannot be imported: {exc}") from None


def instantiate_node(node: Any, where: str, recursive: bool = True) -> Any:
    """``hydra.utils.instantiate(node, _convert_="all")`` with this project's one-line errors.

    A ``_target_`` that cannot be imported is a ``ConfigError`` naming ``where`` (checked before Hydra runs);
    a ``ToolMasterError`` the target raises comes out as itself, a ``TypeError`` or ``ValueError`` (a bad
    argument) as ``ConfigError("bad value in <where>: ...")``, instead of Hydra's ``InstantiationException``.
    ``recursive=False`` keeps nested ``_target_`` nodes as plain dicts (the settings records hold such nodes).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if isinstance(node, (dict, DictConfig)) and "_target_" in node:
        import_target(str(node["_target_"]), where)
    try:
        return instantiate(node, _recursive_=recursive, _convert_="all")
    except InstantiationException as exc:
        cause: BaseException = exc
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ToolMasterError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"bad value in {where}: {cause}") from None
        raise


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, typing.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True  # classes and other hints: not checked here


# Values this project resolves itself before the target sees them, outside the target's own type hints.
EXTRA_VALUES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("pytorch_lightning.Trainer", "precision"): ("auto",),  # toolmaster.training.precision
}


TRAINER = "pytorch_lightning.Trainer"


def _whole(low: int, *also: Any) -> tuple[Callable[[Any], bool], str]:
    allowed = " or ".join(repr(a) for a in also)
    text = f"an integer >= {low}" + (f" or {allowed}" if allowed else "")
    return (lambda v: v in also or (isinstance(v, int) and not isinstance(v, bool) and v >= low)), text


def _positive_number(*also: Any) -> tuple[Callable[[Any], bool], str]:
    allowed = " or ".join(repr(a) for a in also)
    ok = lambda v: v in also or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)  # noqa: E731
    return ok, "a number > 0" + (f" or {allowed}" if allowed else "")


# Value ranges the type hints cannot say: (target, key) -> (check, what is accepted).
RANGES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    (TRAINER, "max_steps"): _whole(1, -1),
    (TRAINER, "max_epochs"): _whole(1, -1, None),
    (TRAINER, "min_steps"): _whole(0, None),
    (TRAINER, "min_epochs"): _whole(0, None),
    (TRAINER, "devices"): (
        lambda v: v in (-1, "auto") or isinstance(v, (str, list)) or (isinstance(v, int) and v >= 1),
        "an integer >= 1, -1 (all), 'auto' or a list of device ids",
    ),
    (TRAINER, "num_nodes"): _whole(1),
    (TRAINER, "accumulate_grad_batches"): _whole(1),
    (TRAINER, "log_every_n_steps"): _whole(1),
    (TRAINER, "check_val_every_n_epoch"): _whole(1, None),
    (TRAINER, "num_sanity_val_steps"): _whole(0, -1),
    (TRAINER, "gradient_clip_val"): (
        lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
        "a number >= 0 or None",
    ),
    (TRAINER, "val_check_interval"): _positive_number(None),
    (TRAINER, "limit_train_batches"): _positive_number(None),
}


def _hint_choices(hint: Any) -> list[str]:
    """Readable alternatives of a hint: Literal values by repr, Unions flattened, other types by name."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return [repr(a) for a in typing.get_args(hint)]
    if origin in (typing.Union, types.UnionType):
        return [choice for arg in typing.get_args(hint) for choice in _hint_choices(arg)]
    if hint is type(None):
        return ["None"]
    return [getattr(hint, "__name__", None) or str(hint).replace("typing.", "")]


def _describe_hint(hint: Any, extra: tuple[Any, ...] = ()) -> str:
    choices = list(dict.fromkeys([*(repr(value) for value in extra), *_hint_choices(hint)]))
    if len(choices) == 1 and typing.get_origin(hint) is not Literal:
        return choices[0]
    return "one of " + ", ".join(choices)


def bind_target(node: dict[str, Any], where: str) -> None:
    """Check a plain-dict config node with ``_target_`` against its target's signature."""
    target = import_target(node["_target_"], where)
    kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_any:
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            allowed = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
            raise ConfigError(f"unknown key {where}.{unknown[0]}; allowed keys: {allowed}")
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in kwargs
    ]
    if missing and not node.get("_partial_"):  # a partial node gets the rest later (the model, ...)
        raise ConfigError(f"missing key {where}.{missing[0]} (required by {node['_target_']})")
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - unresolvable hints: skip type checks
        hints = {}
    for key, value in kwargs.items():
        hint = hints.get(key)
        extra = EXTRA_VALUES.get((node["_target_"], key), ())
        if value in extra:
            continue
        if hint is not None and not _matches(value, hint):
            raise ConfigError(f"bad value {where}.{key}={value!r}; expected {_describe_hint(hint, extra)}")
        check = RANGES.get((node["_target_"], key))
        if check is not None and not check[0](value):
            raise ConfigError(f"bad value {where}.{key}={value!r}; expected {check[1]}")
    if dataclasses.is_dataclass(target) and not node.get("_partial_"):
        try:
            target(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bad value in {where}: {exc}") from None


def _walk(node: Any, where: str) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            bind_target(node, where)
        for key, value in node.items():
            if key != "_target_" and isinstance(value, (dict, list)):
                _walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{where}[{i}]")


def validate(cfg: DictConfig | dict[str, Any]) -> None:
    """Raise ConfigError for the first problem found anywhere in the resolved config."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as exc:  # noqa: BLE001 - omegaconf raises several types for missing / bad interpolations
            key = getattr(exc, "full_key", None)
            first = str(exc).splitlines()[0]
            raise ConfigError(f"missing or unresolvable value at {key}: {first}" if key else first) from None
    else:
        container = cfg
    _walk(container, "")
