"""The benchmark worlds' configs: each composes with its data group and binds, the judge group (+tools/judge=openai)
lands at tools.world.judge and binds against OpenAIJudge, and the documented commands pass the pre-check."""

from __future__ import annotations

import pytest

from toolmaster.cli import compose, precheck
from toolmaster.config import validate
from toolmaster.errors import ConfigError

FILES = {
    "toolhop": ["tools.world.path=/data/ToolHop.json"],
    "stabletoolbench": ["tools.world.tools_dir=/data/tools", "tools.world.queries_dir=/data/queries"],
    "restbench": ["tools.world.queries=/data/tmdb.json", "tools.world.spec=/data/tmdb_oas.json"],
}


@pytest.mark.parametrize("world", list(FILES))
def test_world_and_data_compose_and_bind(world: str) -> None:
    cfg = compose([f"tools={world}", f"data={world}", "output_dir=/tmp/tm-test", *FILES[world]])
    validate(cfg)
    assert cfg.tools.world._target_ == f"toolmaster.worlds.{world}.build_{world}_world"
    assert cfg.tools.isolation == "process"


@pytest.mark.parametrize("world", ["stabletoolbench", "restbench"])
def test_the_judge_group_binds_at_the_world(world: str) -> None:
    base = [
        f"tools={world}",
        f"data={world}",
        "output_dir=/tmp/tm-test",
        *FILES[world],
        "+tools/judge=openai",
    ]
    cfg = compose([*base, "tools.world.judge.model=gpt-4-turbo"])
    validate(cfg)
    assert cfg.tools.world.judge._target_ == "toolmaster.worlds.judge.OpenAIJudge"
    assert cfg.tools.world.judge.api_key_env == "OPENAI_API_KEY" and cfg.tools.world.judge.votes == 3
    with pytest.raises(ConfigError, match="tools.world.judge.model"):
        validate(compose(base))  # the judge's model is mandatory
    with pytest.raises(ConfigError, match="unknown key tools.world.judge.vote"):
        validate(compose([*base, "tools.world.judge.model=m", "+tools.world.judge.vote=2"]))


def test_documented_command_lines_pass_the_precheck() -> None:
    assert precheck(["tools=toolhop", "data=toolhop", *FILES["toolhop"], "sampler.max_turns=11"]) is None
    assert (
        precheck(["tools=restbench", "data=restbench", *FILES["restbench"], "tools.world.mode=replay"])
        is None
    )
    judged = [
        "tools=stabletoolbench",
        "data=stabletoolbench",
        *FILES["stabletoolbench"],
        "+tools/judge=openai",
    ]
    assert precheck([*judged, "tools.world.judge.model=gpt-4-turbo"]) is None
    assert "tools.world.path" in (precheck(["tools=toolhop", "data=toolhop"]) or "")
    assert "unknown key tools.world.judge" in (
        precheck(["tools=toolhop", *FILES["toolhop"], "+tools/judge=openai", "tools.world.judge.model=m"])
        or ""
    )
