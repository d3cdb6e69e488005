"""Invalid YAML in a config file or a --set override is a one-line error naming the file (or the override)
and the line, from the library and from a recipe (exit status 2, no traceback)."""

from __future__ import annotations

import pytest

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.core.config_loading import apply_override, load_config, read_config_dict

BAD_FILES = {
    # line 4 of each is the broken one
    "flow.yaml": "model:\n  name: tiny\ntrain:\n  max_steps: [1, 2\n  seed: 3\n",
    "tab.yaml": "model:\n  name: tiny\ntrain:\n\tmax_steps: 3\n",
    "quote.yaml": "model:\n  name: tiny\ntrain:\n  output_dir: 'runs/x\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("read", [read_config_dict, load_config], ids=["read_config_dict", "load_config"])
def test_invalid_yaml_file_names_file_and_line(tmp_path, name, read):
    path = tmp_path / name
    path.write_text(BAD_FILES[name])
    with pytest.raises(ValueError) as err:
        read(path)
    text = str(err.value)
    assert text.startswith(f"config file {str(path)!r}: invalid YAML at line ") and "\n" not in text, text
    line = int(text.split("at line ")[1].split(",")[0])
    assert line in (4, 5), text  # the broken line, or the next (where the parser noticed the open bracket)


def test_invalid_yaml_file_reports_the_line_the_parser_stopped_at(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: 2\nc: d: e\n")
    with pytest.raises(ValueError, match=r"c.yaml': invalid YAML at line 3, column 5: mapping values"):
        read_config_dict(path)


def test_a_non_utf8_config_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"config file '.*latin1.yaml' is not UTF-8 text \(byte 18\)"):
        read_config_dict(path)


@pytest.mark.parametrize(
    "item, where",
    [
        ("train.max_steps=[1, 2", "line 1, column 6"),
        ('model.name="tiny', "line 1, column 6"),
        ("train.seed=a: b: c", "line 1, column 5"),
    ],
)
def test_invalid_override_value_names_the_override_and_line(item, where):
    with pytest.raises(ValueError) as err:
        apply_override({}, item)
    assert str(err.value).startswith(f"override {item!r}: invalid YAML value at {where}: "), str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_given_to_read_config_dict_are_named_too(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model:\n  name: tiny\n")
    assert read_config_dict(path, ["train.seed=4"]) == {"model": {"name": "tiny"}, "train": {"seed": 4}}
    with pytest.raises(ValueError, match=r"^override 'train.seed=\[4': invalid YAML value at line 1"):
        read_config_dict(path, ["train.seed=[4"])


@pytest.mark.parametrize("bad", ["file", "override"])
def test_a_recipe_reports_invalid_yaml_in_one_line_and_exit_2(tmp_path, capsys, bad):
    config = tmp_path / "score.yaml"
    config.write_text("num_frames: 4\nsize: [64\n" if bad == "file" else "num_frames: 4\n")
    args = ["--config", str(config), "--workdir", str(tmp_path / "run")]
    if bad == "override":
        args += ["--set", "loop.score.size=[64"]
    assert load_recipe("score").main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    culprit = f"config file {str(config)!r}" if bad == "file" else "override 'size=[64'"
    assert err[0].startswith(f"error: {culprit}: invalid YAML") and "line " in err[0], err
    assert not (tmp_path / "run").exists()


def test_wandb_online_without_a_login_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Audit N47: logging.wandb.mode online on a machine not logged in failed with a traceback after the
    loop had generated its data. Now one line from the loop and the trainer, before anything is written."""
    from tests.trainer.trainer_helpers import tiny_config
    from videogpa.engine.train.trainer import Trainer

    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out, online = tmp_path / "loop", "logging.wandb={mode: online}"
    assert load_recipe("pipeline").main(["--output-dir", str(out), "--set", online]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "'logging.wandb.mode': online, but this machine is not logged in to W&B" in err[0]
    )
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match=r"not logged in to W&B at https://api.wandb.ai \(no WANDB_API_KEY"):
        Trainer(tiny_config(tmp_path / "run", logging={"wandb": {"mode": "online"}}))
    assert not (tmp_path / "run").exists()
    (tmp_path / "no-netrc").write_text("machine api.wandb.ai login user password " + "0" * 40 + "\n")
    tmp_path.joinpath("no-netrc").chmod(0o600)
    from videogpa.engine.train.run_logs import wandb_login_problem

    assert wandb_login_problem(tiny_config(tmp_path / "run", logging={"wandb": {"mode": "online"}})) is None
