"""``toolmaster.model_dirs``: which local model.path is refused, with which line, before any model code loads."""

from __future__ import annotations

import sys

import pytest

from toolmaster.model_dirs import could_be_hub_id, model_path_problem


@pytest.mark.parametrize(
    "path,hub",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
        ("Qwen/Qwen2.5-7B-Instruct", True),
        ("outputs/2026-11-30/12-00-00_sft/hf", False),
        ("./ckpt/hf", False),
        ("/abs/ckpt", False),
        ("~/ckpt/hf", False),
        ("ckpt", False),
    ],
)
def test_only_namespace_name_paths_could_be_hub_ids(path, hub):
    assert could_be_hub_id(path) is hub


def test_missing_directory_names_the_path_and_how_to_make_one(tmp_path):
    missing = tmp_path / "run" / "hf"
    assert model_path_problem(str(missing), "hf") == (
        f"model.path='{missing}': no such directory ({missing}); stage=sft (or stage=grpo) exports one to "
        "<run dir>/hf when it finishes, or set model.path to such an exported <run>/hf directory"
    )
    assert model_path_problem("org/name", "hf") is None  # left to the loader as a hub id
    assert "no such directory" in model_path_problem("org/name", "tiny")  # other sources read local dirs only
    assert model_path_problem(None) is None


def test_directory_without_files_says_which_are_missing(tmp_path):
    run = tmp_path / "run"
    (run / "hf").mkdir(parents=True)
    assert model_path_problem(str(run)) == (
        f"model.path='{run}' is not a model directory: no config.json, no weights (model.safetensors or "
        f"pytorch_model.bin), no tokenizer (tokenizer.json or tokenizer.model); did you mean {run / 'hf'}?"
    )
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (run / "hf" / name).write_text("{}")
    assert model_path_problem(str(run / "hf")) is None
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert "no adapter weights (adapter_model.safetensors or adapter_model.bin)" in model_path_problem(
        str(adapter)
    )
    (adapter / "adapter_model.safetensors").write_text("")
    assert model_path_problem(str(adapter)) is None
    assert "is a file" in model_path_problem(str(adapter / "adapter_config.json"))


def test_checking_a_path_imports_no_torch(tmp_path):
    import subprocess

    code = (
        "import sys; from toolmaster.model_dirs import model_path_problem; "
        f"model_path_problem({str(tmp_path)!r}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
