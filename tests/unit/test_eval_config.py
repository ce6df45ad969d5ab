"""`glimprouter eval --config FILE`: JSON or TOML keys become flags, the command line wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glimprouter.cli import build_parser
from glimprouter.errors import ConfigError
from glimprouter.evals.config_file import expand_config


def parsed(*argv: str):
    parser = build_parser()
    return parser.parse_args(expand_config(parser.commands[argv[0]], argv))


def test_reference_keys_and_ours_from_json(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "dataset_name": "aime24",
                "repeat_num": 3,
                "score_method": "step-entropy",
                "token_budget": 4096,
                "output_dir": str(tmp_path / "out"),
                "score_threshold": 1.5,
                "small_model_size": "qwen-1.5b",
                "large-url": "http://10.0.0.2:8002/v1",
                "allow_unconfined_code": True,
            }
        )
    )
    args = parsed("eval", "--config", str(config))
    assert (args.dataset, args.repeats, args.method, args.token_budget) == (
        "aime24",
        3,
        "step-entropy",
        4096,
    )
    assert (args.output, args.threshold, args.small_model) == (tmp_path / "out", 1.5, "qwen-1.5b")
    assert args.large_base_url == "http://10.0.0.2:8002/v1"
    assert args.allow_unconfined_code is True
    notes = capsys.readouterr().err
    assert "dataset_name became --dataset" in notes
    assert "score_threshold became --threshold" in notes


def test_command_line_wins_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'dataset = "math500"\nthreshold = 2.0\noutput = "o"\nwarm_prefix_cache = false\n'
    )
    args = parsed("sweep", "--threshold", "0.25", "--config", str(config), "--output", "mine")
    assert (args.dataset, args.threshold, args.output) == ("math500", 0.25, Path("mine"))
    assert args.warm_prefix_cache is False


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"treshold": 1}', ".json", "unknown --config key(s) ['treshold']; valid keys: ["),
        ("threshold = ", ".toml", "is not valid JSON or TOML"),
        ("[1, 2]", ".json", "must hold one object"),
        ('{"allow_unconfined_code": "yes"}', ".json", "is a switch: true or false"),
    ],
)
def test_bad_config_names_what_to_fix(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    config = tmp_path / f"config{suffix}"
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        parsed("eval", "--config", str(config))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert "valid keys" not in message or "score_threshold" in str(error.value)
