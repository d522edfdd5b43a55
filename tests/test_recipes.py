"""The paper recipes in data_configs/: SFT/DFT pairs, hyper-parameters, LLaMA-Factory's own
argument parser with the dft_mm patch, dataset resolution after conversion, and a tiny
``llamafactory-cli train`` run (text and vision-language) on converted fixture data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dft_mm.data import ultrafeedback, wethink

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "data_configs"
FIXTURES = REPO / "tests" / "fixtures" / "data"
RECIPES = sorted(CONFIGS.glob("*.yaml"))
LOSS_KEYS = {"sft_loss", "dft_level", "dft_alpha"}
# dataset name -> (folder under data/ that docs/data.md tells users to convert into, converter's entry)
CONVERTED = {
    ultrafeedback.DATASET_NAME: (f"ultrafeedback/{ultrafeedback.FILE_NAME}", ultrafeedback.DATASET_INFO_ENTRY),
    wethink.DATASET_NAME: (f"wethink/{wethink.FILE_NAME}", wethink.dataset_info_entry()),
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _is_vl(config: dict) -> bool:
    return config["template"] == "qwen2_vl"


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """The documented layout in a temp root: data_configs/dataset_info.json beside data/<dataset>/
    written by the converters from the fixtures. Returns the temp data_configs dir."""
    root = tmp_path_factory.mktemp("layout")
    (root / "data_configs").mkdir()
    shutil.copy(CONFIGS / "dataset_info.json", root / "data_configs" / "dataset_info.json")
    ultrafeedback.convert_ultrafeedback(str(FIXTURES / "ultrafeedback_sample.jsonl"), root / "data" / "ultrafeedback")
    wethink.convert_wethink(str(FIXTURES / "wethink_sample.jsonl"), FIXTURES, root / "data" / "wethink",
                            check_images=True)
    return root / "data_configs"


def _cpu_config(recipe: Path, model: Path, dataset_dir: Path, output_dir: Path) -> dict:
    """The recipe with the model swapped for a tiny one and the GPU-only keys overridden:
    LLaMA-Factory refuses ``bf16`` without a GPU, and ``deepspeed`` needs the deepspeed package
    and an accelerator (the ZeRO-3 JSON itself is checked in test_deepspeed_config_is_zero3)."""
    config = _load(recipe)
    config.pop("deepspeed", None)
    config.update(model_name_or_path=str(model), dataset_dir=str(dataset_dir), output_dir=str(output_dir), bf16=False)
    return config


def test_recipes_come_in_sft_dft_pairs_differing_only_in_loss_keys():
    assert len(RECIPES) >= 12
    for sft_path in [p for p in RECIPES if p.stem.endswith("_sft")]:
        dft_path = sft_path.with_name(sft_path.stem[:-4] + "_dft.yaml")
        sft, dft = _load(sft_path), _load(dft_path)
        differing = {k for k in sft.keys() | dft.keys() if sft.get(k) != dft.get(k)}
        # output_dir differs so that the pair can run side by side: only its last part (sft/dft)
        assert differing - {"output_dir"} <= LOSS_KEYS, f"{sft_path.name} vs {dft_path.name}: {differing}"
        assert Path(sft["output_dir"]).parent == Path(dft["output_dir"]).parent
        assert (Path(sft["output_dir"]).name, Path(dft["output_dir"]).name) == ("sft", "dft")
        assert sft["sft_loss"] == "nll" and dft["sft_loss"] == "dft"  # the SFT baseline opts in explicitly
    assert all(p.stem.endswith(("_sft", "_dft")) for p in RECIPES)
    assert sum(p.stem.endswith("_sft") for p in RECIPES) * 2 == len(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_uses_the_paper_hyperparameters(recipe):
    config = _load(recipe)
    assert config["num_train_epochs"] == 1.0 and config["stage"] == "sft" and config["dataset_dir"] == "data_configs"
    assert config["warmup_steps"] == 0.05
    gpus = 8 if "deepspeed" in config else 1  # the ZeRO-3 recipes are written for 8 GPUs
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] * gpus == 16
    if config["finetuning_type"] == "lora":
        assert (config["lora_rank"], config["lora_alpha"]) == (8, 16)
    else:
        assert config["learning_rate"] == 5.0e-5
    if _is_vl(config):
        assert config["dataset"] == "wethink" and config["freeze_vision_tower"] is True
        assert "Qwen2.5-VL-3B" in config["model_name_or_path"]
    else:
        assert config["dataset"] == "ultrafeedback_best" and config["template"] == "qwen"


def test_deepspeed_config_is_zero3():
    referenced = {_load(p)["deepspeed"] for p in RECIPES if "deepspeed" in _load(p)}
    assert referenced == {"data_configs/ds_z3_config.json"}
    ds = json.loads((REPO / "data_configs" / "ds_z3_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"


def test_dataset_info_points_at_converter_outputs(layout):
    from llamafactory.data.parser import get_dataset_list

    info = json.loads((CONFIGS / "dataset_info.json").read_text())
    assert set(info) == set(CONVERTED)
    for name, (relative, entry) in CONVERTED.items():
        assert info[name] == {**entry, "file_name": f"../data/{relative}"}
    for attr in get_dataset_list(list(CONVERTED), str(layout)):
        assert (layout / attr.dataset_name).is_file(), f"{attr} -> {layout / attr.dataset_name}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_with_llamafactory_and_the_patch(recipe, layout, tiny_text_model, tiny_vl_model, tmp_path):
    import dft_mm

    dft_mm.apply()
    from llamafactory.hparams import get_train_args

    raw = _load(recipe)
    model = tiny_vl_model if _is_vl(raw) else tiny_text_model
    _, data_args, training_args, finetuning_args, _ = get_train_args(_cpu_config(recipe, model, layout, tmp_path))
    assert finetuning_args.sft_loss == raw["sft_loss"]
    assert finetuning_args.finetuning_type == raw["finetuning_type"]
    assert training_args.learning_rate == raw["learning_rate"]
    info = json.loads((layout / "dataset_info.json").read_text())
    for name in data_args.dataset:
        assert (layout / info[name]["file_name"]).is_file()


def _llamafactory_cli() -> str:
    beside = Path(sys.executable).with_name("llamafactory-cli")
    found = str(beside) if beside.exists() else shutil.which("llamafactory-cli")
    if found is None:
        pytest.skip("llamafactory-cli not installed (pip install -e . installs llamafactory==0.9.5)")
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("recipe_name", ["qwen2_5coder_3b_ultrafeedback_dft", "qwen2_5vl_3b_wethink_dft"])
def test_tiny_training_run_on_converted_data(recipe_name, layout, tiny_text_model, tiny_vl_model, tmp_path):
    recipe = CONFIGS / f"{recipe_name}.yaml"
    vl = _is_vl(_load(recipe))
    config = _cpu_config(recipe, tiny_vl_model if vl else tiny_text_model, layout, tmp_path / "out")
    config.update(max_steps=2, cutoff_len=256, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                  preprocessing_num_workers=1, dataloader_num_workers=0, logging_steps=1, save_steps=1000,
                  plot_loss=False, report_to="none", overwrite_output_dir=True)
    if vl:
        config["image_max_pixels"] = 56 * 56
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **OFFLINE, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DFT_MM_DISABLE", None)
    done = subprocess.run([_llamafactory_cli(), "train", str(config_path)], check=False, env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    if vl:
        assert "<|image_pad|>" in done.stdout + done.stderr  # the image reached the model input
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    for entry in steps:  # DFT loss = mean p_t * nll_t is far below the plain NLL on a random model
        assert 0 < entry["loss"] < entry["nll"] and 0 < entry["mean_target_prob"] < 1
