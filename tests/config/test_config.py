from pathlib import Path

import pytest

from kimi_rl.config import Config, ConfigError
from kimi_rl.config.loader import compose, default_conf_dir, load_config, save_config

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


def test_mirror_descent_defaults_to_mean_logp_and_rest_keeps_the_sum():
    """The default mirror descent averages token log-probs (tau 50 on that scale); ReST, a baseline measured on
    summed log-probs, keeps the sum in conf/algo/rest.yaml."""
    md, rest = load_config([]).algo, load_config(["algo=rest"]).algo
    assert (md.loss, md.length_normalize, md.tau) == ("mirror_descent", True, 50.0)
    assert (rest.loss, rest.length_normalize) == ("rest", False)


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
                                                 "eval", "phase", "make_tests", "curate", "difficulty", "long2short", "bench",
                                                 "reward_model"}


def test_config_yaml_states_the_dataclass_defaults():
    """conf/config.yaml is the commented copy users edit; it restates each default of src/config*.py, so the two
    cannot disagree: a value that departs from the dataclass belongs in a group file (conf/<group>/*.yaml)."""
    from omegaconf import OmegaConf

    from kimi_rl.config import Config
    from kimi_rl.config.loader import default_conf_dir

    yaml = OmegaConf.to_container(OmegaConf.load(default_conf_dir() / "config.yaml"))
    defaults = OmegaConf.to_container(OmegaConf.structured(Config))
    differ = [f"{section}.{key}: {value!r} != {defaults[section][key]!r}" for section, body in yaml.items()
              if section != "defaults" for key, value in body.items() if value != defaults[section][key]]
    assert not differ, differ


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
    with pytest.raises(ConfigError, match="algo.advantage_scale"):
        load_config(["algo.advantage_scale=std"])
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


# ---- every value checked against its range at start (issue 16, item 4)

@pytest.mark.parametrize("override, key", [
    ("rl.iterations=0", "rl.iterations"), ("algo.weight_decay=-5", "algo.weight_decay"),
    ("rollout.temperature=inf", "rollout.temperature"), ("algo.tau=inf", "algo.tau"), ("algo.tau=nan", "algo.tau"),
    ("run.name=../x", "run.name"), ("run.name=/tmp/x", "run.name"), ("run.name=a/../../x", "run.name"),
    ("run.name=cache", "run.name"), ("run.seed=-1", "run.seed"), ("sft.weight_decay=-1", "sft.weight_decay"),
    ("sft.log_every=0", "sft.log_every"), ("model.num_heads=0", "model.num_heads"),
    ("model.max_position_embeddings=0", "model.max_position_embeddings"),
    ("trainer.precision=bogus", "trainer.precision"), ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("trainer.threads=-1", "trainer.threads"), ("algo.max_grad_norm=-1", "algo.max_grad_norm"),
    ("algo.reset_scope=half", "algo.reset_scope"),
    ("algo.clip_eps=0", "algo.clip_eps"), ("algo.repeat_penalty=0.5", "algo.repeat_penalty"),
    ("data.correction_prob=2", "data.correction_prob"), ("data.max_rechecks=-1", "data.max_rechecks"),
    ("data.heldout_fraction=-inf", "data.heldout_fraction"), ("eval.temperature=inf", "eval.temperature"),
    ("phase.long2short_len_reward_weight=inf", "phase.long2short_len_reward_weight"),
    ("rollout.max_response_tokens=1024", "rollout.max_response_tokens"),  # the built model's whole context
    ("eval.max_response_tokens=5000", "eval.max_response_tokens"),
])
def test_out_of_range_values_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": ") as err:
        load_config([override])
    assert "\n" not in str(err.value)


def test_repeat_detection_and_template_rules_are_checked_in_the_config():
    with pytest.raises(ConfigError, match=r"rollout\.repeat_count: must be >= 2"):
        load_config(["rollout.repeat_ngram=4", "rollout.repeat_count=1"])
    with pytest.raises(ConfigError, match=r"rollout\.repeat_window: 10 can never hold"):
        load_config(["rollout.repeat_ngram=4", "rollout.repeat_count=8", "rollout.repeat_window=10"])
    with pytest.raises(ConfigError, match=r"model\.hidden_size: head size .* is odd"):
        load_config(["model.hidden_size=6", "model.num_heads=2", "model.num_kv_heads=2"])
    from kimi_rl.config import DataConfig

    with pytest.raises(ConfigError, match=r"data\.prompt_template: .*\{x\}.*KeyError"):
        DataConfig(prompt_template="{question} {x}")
    with pytest.raises(ConfigError, match=r"data\.prompt_template: 'Solve it' has no \{question\}"):
        DataConfig(prompt_template="Solve it")
    with pytest.raises(ConfigError, match=r"data\.question_field"):
        DataConfig(question_field=" ")


def test_every_float_key_rejects_inf_and_nan():
    """A float key added later is covered too: every section's __post_init__ checks finiteness."""
    import dataclasses

    cfg = load_config([])
    checked = 0
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            if isinstance(getattr(values, f.name), float):
                for bad in (float("inf"), float("-inf"), float("nan")):
                    with pytest.raises(ConfigError, match=rf"^{section.name}\.{f.name}: must be a finite number"):
                        dataclasses.replace(values, **{f.name: bad})  # runs __post_init__ like load_config
                checked += 1
    assert checked >= 20


def test_run_names_stay_inside_run_dir():
    from kimi_rl.config import check_run_name

    for good in ("my_run", "a/b", "exp-1.2", "arithmetic/long2short/rl"):
        check_run_name(good)
    for bad in ("", " ", "..", "../x", "a/../../b", "a//b", "/abs", "a\\b", "./x", " x"):
        with pytest.raises(ConfigError, match="run.name"):
            check_run_name(bad)


def test_precision_choices_are_lightnings():
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    from kimi_rl.config import PRECISIONS

    assert set(PRECISIONS) == set(get_args(_PRECISION_INPUT_STR)) | set(get_args(_PRECISION_INPUT_STR_ALIAS))


@pytest.mark.parametrize("override, first_line", [
    ("rl.iterations=0", "kimi-rl: config error: rl.iterations: must be >= 1, got 0"),
    ("algo.weight_decay=-5", "kimi-rl: config error: algo.weight_decay: must be >= 0, got -5.0"),
    ("rollout.temperature=inf", "kimi-rl: config error: rollout.temperature: must be a finite number, got inf"),
    ("algo.tau=inf", "kimi-rl: config error: algo.tau: must be a finite number, got inf"),
    ("run.name=../x", "kimi-rl: config error: run.name: '../x' must be a folder name inside run.dir"),
])
def test_cli_stops_at_start_with_one_line(tmp_path, capsys, override, first_line):
    from kimi_rl.cli import main

    assert main(["train", f"run.dir={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(first_line) and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written, nothing built


def test_verifier_build_errors_name_verifier_options(tmp_path):
    """Whatever a verifier factory raises for its options (KeyError included) is a ConfigError naming the key."""
    from kimi_rl.pipeline import check_verifier
    from kimi_rl.rewards import VERIFIERS

    def picky(**options):
        raise KeyError(f"unknown backend '{options.get('backend')}'; valid names: a, b")

    VERIFIERS.register("picky_test", picky)
    try:
        with pytest.raises(ConfigError, match=r"^data\.verifier_options \{'backend': 'docker'\} for verifier "
                                              r"'picky_test': unknown backend 'docker'; valid names: a, b$"):
            check_verifier("picky_test", {"backend": "docker"})
    finally:
        VERIFIERS.unregister("picky_test")
    with pytest.raises(ConfigError, match=r"^data\.verifier: unknown verifier 'nope'"):
        check_verifier("nope", {})


def test_every_group_file_composes_and_a_preset_picks_its_groups(tmp_path):
    """Each conf/<group>/<name>.yaml composes on its own; experiment=smollm2_gym picks model=smollm2 and
    data=reasoning_gym through its own defaults list, its keys win over theirs, and the command line wins over it."""
    import shutil

    from kimi_rl.config.loader import _groups, default_conf_dir

    for group, names in _groups(default_conf_dir()).items():
        for name in names:
            load_config([f"{group}={name}"])
    cfg = load_config(["experiment=smollm2_gym"])
    assert cfg.model.path == "runs/models/smollm2" and cfg.data.source == "reasoning_gym"
    assert cfg.data.rg_answer_format == "last_number" and cfg.rollout.max_response_tokens == 160  # model file: 128
    assert cfg.data.rg_levels["chain_sum"][0]["min_terms"] == 2  # from data=reasoning_gym
    assert load_config(["experiment=smollm2_gym", "model=tiny"]).model.path is None
    conf = tmp_path / "conf"
    shutil.copytree(default_conf_dir(), conf)
    (conf / "experiment" / "bad.yaml").write_text("defaults:\n  - model: smollm3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: defaults: model: smollm3 is no conf/model/smollm3.yaml"):
        load_config(["experiment=bad"], conf)
