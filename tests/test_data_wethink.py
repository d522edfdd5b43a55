"""WeThink -> multimodal sharegpt converter on fixture rows in the upstream schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dft_mm.cli import main
from dft_mm.data.io import ConversionStats
from dft_mm.data.wethink import WETHINK_SYSTEM_PROMPT, assistant_turn, convert_wethink, user_turn
from dft_mm.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "data"
ROWS = FIXTURES / "wethink_sample.jsonl"  # image_path values are relative to FIXTURES


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "wethink_sharegpt.jsonl").read_text().splitlines()]


def _user(record: dict) -> str:
    return record["messages"][0]["content"]


def _assistant(record: dict) -> str:
    return record["messages"][1]["content"]


@pytest.mark.parametrize("cot, answer, expected", [
    ("Count them: three.", "3", "<think>\nCount them: three.\n</think>\n<answer>3</answer>"),
    ("<think>Add 2 and 3.</think><answer>5</answer>", "5", "<think>\nAdd 2 and 3.\n</think>\n<answer>5</answer>"),
    ("<think>The square is largest.</think>", "(B)", "<think>\nThe square is largest.\n</think>\n<answer>(B)</answer>"),
    ("Adding gives five. <answer>5</answer>", "5", "<think>\nAdding gives five.\n</think>\n<answer>5</answer>"),
    ("<think>unterminated reasoning", "7", "<think>\nunterminated reasoning\n</think>\n<answer>7</answer>"),
])
def test_assistant_turn_never_double_wraps(cot, answer, expected):
    text = assistant_turn(cot, answer, ConversionStats())
    assert text == expected
    assert text.count("<think>") == text.count("</think>") == text.count("<answer>") == 1


def test_user_turn_keeps_one_placeholder_per_image():
    stats = ConversionStats()
    assert user_turn("How many?", 1, stats) == "<image>How many?"
    assert user_turn("<image>\nHow many?", 1, stats) == "<image>\nHow many?"  # author's placement kept
    escaped = user_turn("Tags <image> and <image>.", 1, stats)
    assert escaped == "<image>Tags [image] and [image]."
    assert user_turn("A <video> and an <audio> tag.", 1, stats) == "<image>A [video] and an [audio] tag."
    assert stats.notes == {"image_tag_in_problem_used_as_position": 1, "image_tag_in_problem_escaped": 1,
                           "video_tag_in_problem_escaped": 1, "audio_tag_in_problem_escaped": 1}


def test_assistant_turn_escapes_media_tags():
    stats = ConversionStats()
    text = assistant_turn("The <image> shows one <video> still.", "1", stats)
    assert text == "<think>\nThe [image] shows one [video] still.\n</think>\n<answer>1</answer>"
    assert stats.notes == {"image_tag_in_cot_escaped": 1, "video_tag_in_cot_escaped": 1}


def test_fixture_conversion_counts_every_skip(tmp_path):
    stats = convert_wethink(str(ROWS), FIXTURES, tmp_path)
    records = _records(tmp_path)
    assert stats["kept"] == len(records) == 8  # broken.png exists, so it passes without --check-images
    assert stats["read"] == 12
    assert stats["notes"]["image_tag_in_cot_escaped"] == stats["notes"]["video_tag_in_problem_escaped"] == 1
    assert stats["skipped"] == {"empty_answer": 1, "malformed_row: invalid JSON": 1, "missing_image": 1,
                                "missing_image_path": 1}
    for record in records:
        # LLaMA-Factory's check: as many <image> tokens in the messages as images
        assert sum(m["content"].count("<image>") for m in record["messages"]) == len(record["images"]) == 1
        assert not any(tag in m["content"] for m in record["messages"] for tag in ("<video>", "<audio>"))
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in record["images"])
        assert record["system"] == WETHINK_SYSTEM_PROMPT
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert _assistant(record).startswith("<think>\n") and _assistant(record).count("<answer>") == 1
    by_problem = {_user(r): r for r in records}
    assert "<image>The tag [image] appears twice here: [image]. How many shapes are there?" in by_problem
    assert _assistant(by_problem["<image>How many shapes are red?"]).endswith("<answer>3</answer>")  # int answer
    assert json.loads((tmp_path / "dataset_info.json").read_text())["wethink"]["formatting"] == "sharegpt"


def test_check_images_drops_unreadable_files_and_limit_stops_early(tmp_path):
    stats = convert_wethink(str(ROWS), FIXTURES, tmp_path / "checked", check_images=True)
    assert stats["skipped"]["unreadable_image"] == 1 and stats["kept"] == 7
    limited = convert_wethink(str(ROWS), FIXTURES, tmp_path / "limited", limit=2, system_prompt="")
    records = _records(tmp_path / "limited")
    assert limited["kept"] == len(records) == 2 and limited["read"] == 2
    assert all("system" not in r for r in records)
    info = json.loads((tmp_path / "limited" / "dataset_info.json").read_text())["wethink"]
    assert "system" not in info["columns"]


def test_cli_runs_and_rejects_a_missing_image_root(tmp_path, capsys):
    assert main(["data", "wethink", "--input", str(ROWS), "--image-root", str(FIXTURES), "--out", str(tmp_path),
                 "--check-images"]) == 0
    assert "unreadable_image" in capsys.readouterr().out
    assert main(["data", "wethink", "--input", str(ROWS), "--image-root", str(tmp_path / "nope"),
                 "--out", str(tmp_path)]) == 2
    assert "--image-root" in capsys.readouterr().err
    with pytest.raises(UserError, match="no usable WeThink rows"):
        convert_wethink(str(ROWS), tmp_path, tmp_path / "out")  # wrong root: every image is missing
