from pathlib import Path

import pytest

from kimi_rl.config import Config, ConfigError
from kimi_rl.config_loader import compose, default_conf_dir, load_config, save_config

CONF = default_conf_dir()


def test_defaults_compose_to_typed_config():
    cfg = load_config([])
    assert isinstance(cfg, Config)
    assert cfg.algo.loss == "mirror_descent"
    assert cfg.model.path is None and cfg.data.source == "arithmetic"


@pytest.mark.parametrize("path", sorted(p for p in CONF.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_group_file_loads(path: Path):
    cfg = load_config([f"{path.parent.name}={path.stem}"])
    assert isinstance(cfg, Config)


def test_group_choice_and_key_override():
    cfg = load_config(["algo=grpo", "algo.clip_eps=0.3", "data.levels=[2,3]", "rollout.engine=hf"])
    assert (cfg.algo.loss, cfg.algo.clip_eps, cfg.data.levels, cfg.rollout.engine) == ("grpo", 0.3, [2, 3], "hf")


def test_group_file_keys_in_other_sections_win_over_that_sections_file(tmp_path):
    """model=X may set rollout keys: they beat conf/rollout/<default>.yaml whatever the defaults order."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "rollout").mkdir()
    (conf / "config.yaml").write_text("defaults:\n  - model: big\n  - rollout: fast\nrollout:\n  temperature: 0.5\n")
    (conf / "model" / "big.yaml").write_text("model:\n  hidden_size: 64\nrollout:\n  max_response_tokens: 77\n")
    (conf / "rollout" / "fast.yaml").write_text("rollout:\n  max_response_tokens: 999\n  top_p: 0.9\n")
    cfg = load_config([], conf)
    assert cfg.rollout.max_response_tokens == 77  # model file's foreign key wins
    assert cfg.rollout.top_p == 0.9 and cfg.model.hidden_size == 64
    assert cfg.rollout.temperature == 0.5  # config.yaml body where no group file sets the key
    assert load_config(["rollout.max_response_tokens=5"], conf).rollout.max_response_tokens == 5


def test_every_yaml_key_is_a_config_field():
    """conf/config.yaml keys exist in the dataclasses (a typo would fail here, not hours in)."""
    from omegaconf import OmegaConf

    cfg = compose([])
    assert set(OmegaConf.to_container(cfg)) == {"run", "model", "data", "sft", "algo", "rollout", "trainer", "rl",
                                                 "eval", "phase"}


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'model.hiden_size'.*model.hidden_size"):
        load_config(["model.hiden_size=3"])


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown key 'modle"):
        load_config(["modle.x=1"])


def test_bad_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"sft.max_steps.*Integer"):
        load_config(["sft.max_steps=many"])


def test_bad_value_names_key():
    with pytest.raises(ConfigError, match="algo.baseline"):
        load_config(["algo.baseline=median"])
    with pytest.raises(ConfigError, match="rollout.segment_tokens.*larger"):
        load_config(["rollout.segment_tokens=999", "rollout.max_response_tokens=100"])
    with pytest.raises(ConfigError, match="rollout.segment_tokens.*positive"):
        load_config(["rollout.segment_tokens=0"])


def test_unknown_group_choice_lists_choices():
    with pytest.raises(ConfigError, match="choices: .*mirror_descent"):
        load_config(["algo=ppo"])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(["rl.iterations"])


def test_bad_key_in_a_yaml_file_names_the_file(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x.yaml").write_text("model:\n  widht: 3\n")
    (tmp_path / "config.yaml").write_text("defaults:\n  - model: x\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown key 'model.widht'"):
        load_config([], conf_dir=tmp_path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(["rl.iterations=7"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "iterations: 7" in text


@pytest.mark.parametrize("override, key", [
    ("eval.samples=0", "eval.samples"), ("eval.temperature=-1", "eval.temperature"),
    ("rl.checkpoint_every=-1", "rl.checkpoint_every"), ("trainer.accelerator=tpu", "trainer.accelerator"),
    ("rollout.kv_cache_gib=-1", "rollout.kv_cache_gib"), ("rollout.repeat_count=-2", "rollout.repeat_count"),
    ("phase.long2short_at_iteration=-5", "phase.long2short_at_iteration"),
])
def test_bad_values_in_every_section_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_names_and_sft_on_real_data_are_checked_before_training(tmp_path):
    from kimi_rl.pipeline import prepare

    for override, key in (("algo.loss=nope", "algo.loss"), ("data.verifier=nope", "data.verifier"),
                          ("data.verifier_options={bogus: 1}", "data.verifier_options")):
        with pytest.raises(ConfigError, match=key):
            prepare(load_config([override, f"run.dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="sft.enabled"):
        prepare(load_config(["data=gsm8k_small", "sft.enabled=true", f"run.dir={tmp_path}"]))
    # the default easy-first curriculum names levels 1-2: other levels fail at start, naming the stage
    with pytest.raises(ConfigError, match=r"data.curriculum\[0\].levels: no problems of level"):
        prepare(load_config(["data.levels=[3,4]", "data.train_per_level=20", f"run.dir={tmp_path}"]))
    assert load_config(["data=gsm8k_small"]).sft.enabled is False
    assert load_config(["data=math500"]).eval.max_problems_per_level >= 311
