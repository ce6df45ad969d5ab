"""Loaders on the offline benchmark files (../shared/data beside the repository) and on small
files in the official formats."""

from __future__ import annotations

import base64
import json
import pickle
import re
import zipfile
import zlib
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

import glimprouter.evals.datasets as dataset_files
from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import DATASETS, GPQA_ZIP_PASSWORD, load_problems
from glimprouter.prompts import render_question
from tests.paths import SHARED_DATA

DATA = SHARED_DATA

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no offline data in {DATA}")


def test_aime24() -> None:
    problems = load_problems("aime24", data_dir=DATA)
    assert len(problems) == 30
    assert {p.task for p in problems} == {"math"}
    assert all(p.gold.isdigit() and p.question for p in problems)
    assert len({p.id for p in problems}) == 30


def test_math500_levels_and_limit() -> None:
    problems = load_problems("math500", data_dir=DATA)
    assert len(problems) == 500
    assert {p.extra["level"] for p in problems} == {1, 2, 3, 4, 5}
    easy = load_problems("math500", data_dir=DATA, levels={1, 2})
    assert easy and {p.extra["level"] for p in easy} == {1, 2}
    assert len(easy) == sum(p.extra["level"] <= 2 for p in problems)
    assert (
        load_problems("math500", data_dir=DATA, levels={1}, limit=3)
        == [p for p in problems if p.extra["level"] == 1][:3]
    )


def test_gpqa_shuffle_is_spread_and_stable() -> None:
    problems = load_problems("gpqa_diamond", data_dir=DATA)
    assert len(problems) == 198
    letters = Counter(p.gold for p in problems)
    assert set(letters) == set("ABCD")
    assert min(letters.values()) >= 0.15 * len(problems)
    assert load_problems("gpqa_diamond", data_dir=DATA) == problems
    with zipfile.ZipFile(DATA / "gpqa_diamond.zip") as archive:
        text = archive.read(archive.namelist()[0], pwd=GPQA_ZIP_PASSWORD).decode()
    rows = {str(row["id"]): row for row in map(json.loads, text.splitlines())}
    for problem in problems:
        listing = problem.question[problem.question.rindex("\n\nA) ") + 2 :]
        parts = re.split(r"(?:^|\n)([A-D])\) ", listing)[1:]
        options = dict(zip(parts[::2], parts[1::2], strict=True))
        assert list(options) == list("ABCD")
        assert options[problem.gold] == rows[problem.id]["Correct Answer"].strip()


def test_lcb_v5_public_tests() -> None:
    problems = load_problems("lcb_v5", data_dir=DATA)
    assert len(problems) == 175
    assert all(p.task == "code" and p.tests and p.fn_name is None for p in problems)
    assert all(t.testtype == "stdin" for p in problems for t in p.tests)
    first = problems[0]
    assert render_question(first.question, "code").endswith(
        "Enclose your code within delimiters as follows.\n```python\n# YOUR CODE HERE\n```\n\n"
    )
    assert all(
        date(2024, 8, 1) <= date.fromisoformat(p.extra["contest_date"]) < date(2025, 2, 1)
        for p in problems
    )


def test_lcb_v6_window_on_the_v5_file() -> None:
    rows = [json.loads(line) for line in (DATA / "lcb_v5_atcoder_public.jsonl").open()]
    in_window = {
        r["question_id"] for r in rows if "2025-02-01" <= r["contest_date"][:10] < "2025-05-01"
    }
    assert {p.id for p in load_problems("lcb_v6", data_dir=DATA)} == in_window
    january = load_problems("lcb_v5", data_dir=DATA, since=date(2024, 12, 1))
    assert january and all(p.extra["contest_date"] >= "2024-12-01" for p in january)


def _encode_hidden(cases: list[dict]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def test_official_formats(tmp_path: Path) -> None:
    aime25 = [{"problem": f"Problem {n}", "answer": str(n), "id": str(n)} for n in range(3)]
    (tmp_path / "aime25.jsonl").write_text("".join(json.dumps(r) + "\n" for r in aime25))
    hidden = [{"input": "[3, 4]\n1", "output": "[4, 5]", "testtype": "functional"}]
    record = {
        "question_title": "Add k",
        "question_content": "Add k to every element.",
        "platform": "leetcode",
        "question_id": "3500",
        "contest_id": "weekly-contest-440",
        "contest_date": "2025-03-08T00:00:00",
        "starter_code": "class Solution:\n"
        "    def addAll(self, nums: List[int], k: int) -> List[int]:\n        ",
        "difficulty": "easy",
        "public_test_cases": json.dumps(
            [{"input": "[1, 2]\n2", "output": "[3, 4]", "testtype": "functional"}]
        ),
        "private_test_cases": _encode_hidden(hidden),
        "metadata": json.dumps({"func_name": "addAll"}),
    }
    (tmp_path / "lcb_v6_sample.jsonl").write_text(json.dumps(record) + "\n")

    problems = load_problems("aime25", data_dir=tmp_path)
    assert [(p.id, p.gold, p.task) for p in problems] == [
        ("0", "0", "math"),
        ("1", "1", "math"),
        ("2", "2", "math"),
    ]
    [problem] = load_problems("lcb_v6", data_dir=tmp_path)
    assert problem.fn_name == "addAll" and problem.extra["difficulty"] == "easy"
    assert [t.output for t in problem.tests] == ["[3, 4]", "[4, 5]"]
    assert problem.question.endswith(f"```python\n{record['starter_code']}\n```\n\n")
    assert load_problems("lcb_v5", data_dir=tmp_path) == []  # March 2025 is past the v5 window


def test_data_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"problem": "1+1?", "answer": 2}\n\n{"problem": "2+2?", "answer": "4"}\n')
    # No id field: the line number is the id.
    assert [(p.id, p.gold) for p in load_problems(data_file=path)] == [("1", "2"), ("3", "4")]
    path.write_text('{"problem": "1+1?", "answer": 2}\n\n{"problem": "2+2?"}\n')
    with pytest.raises(ConfigError, match=r"line 3 has no field 'answer'"):
        load_problems(data_file=path)


def test_bad_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_problems("aime26", data_dir=DATA)
    assert all(name in str(error.value) for name in DATASETS)
    with pytest.raises(ConfigError, match=r"aime25\.jsonl.*--data-dir"):
        load_problems("aime25", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="--levels"):
        load_problems("aime24", data_dir=DATA, levels={1})


def test_a_zlib_bomb_in_a_dataset_field_is_refused(monkeypatch):
    monkeypatch.setattr(dataset_files, "MAX_INFLATED_BYTES", 4096)
    bomb = base64.b64encode(zlib.compress(b"[" + b" " * 10_000 + b"]")).decode()
    with pytest.raises(ConfigError, match="inflates past"):
        dataset_files._code_tests(bomb)
    with pytest.raises(ConfigError, match="inflates past 4,096 bytes"):
        dataset_files.inflate(zlib.compress(b"x" * 4097))
    assert dataset_files.inflate(zlib.compress(b"x" * 4096)) == b"x" * 4096
    with pytest.raises(zlib.error):
        dataset_files.inflate(zlib.compress(b"x" * 100)[:-6])


def test_a_zip_member_past_the_cap_is_refused(monkeypatch, tmp_path):
    archive = tmp_path / "rows.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("rows.jsonl", '{"q": 1}\n' * 1000)
    monkeypatch.setattr(dataset_files, "MAX_INFLATED_BYTES", 4096)
    with pytest.raises(ConfigError, match="inflates past"):
        list(dataset_files._read_json_lines(archive))
    monkeypatch.setattr(dataset_files, "MAX_INFLATED_BYTES", 1 << 20)
    assert len(list(dataset_files._read_json_lines(archive))) == 1000
