"""Loading VLMEvalKit TSVs (index-reference images, errors) and building VLMEvalKit's prompts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.vlm.datasets import KNOWN_DATASETS, load_dataset, spec_for
from dft_mm.evaluation.vlm.prompts import answer_options, build_prompt

FIXTURES = Path(__file__).parent / "fixtures" / "vlm"


@pytest.fixture
def lmu(tmp_path, monkeypatch):
    """An $LMUData folder holding the fixture TSVs under their VLMEvalKit names."""
    for name in ("MathVerse_MINI", "MathVision_MINI", "WeMath"):
        shutil.copy(FIXTURES / f"{name}.tsv", tmp_path / f"{name}.tsv")
    monkeypatch.setenv("LMUData", str(tmp_path))
    return tmp_path


def test_known_dataset_from_lmudata_with_index_reference_images(lmu):
    data = load_dataset("MathVerse_MINI")
    assert data.path == lmu / "MathVerse_MINI.tsv" and data.spec.benchmark == "MathVerse"
    rows = {row["index"]: row for row in data.rows}
    assert rows["2"]["image"] == "1"  # a Vision Only row sharing row 1's image
    shared, own = data.images(rows["2"]), data.images(rows["1"])
    assert len(shared) == 1 and shared[0].size == (56, 56) and shared[0].mode == "RGB"
    assert list(shared[0].getdata()) == list(own[0].getdata())


def test_legacy_file_name_of_older_vlmevalkit(tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "MathVerse_MINI.tsv", tmp_path / "MathVerse_MINIV.tsv")  # the URL's basename
    monkeypatch.setenv("LMUData", str(tmp_path))
    assert load_dataset("MathVerse_MINI").path == tmp_path / "MathVerse_MINIV.tsv"


def test_missing_dataset_names_url_and_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(tmp_path))
    with pytest.raises(UserError) as err:
        load_dataset("MathVision")
    message = str(err.value)
    assert str(tmp_path / "MathVision.tsv") in message
    assert KNOWN_DATASETS["MathVision"].url in message and "93f6de14f7916e598aa1b7165589831e" in message


def test_known_name_wins_over_a_same_named_folder(lmu, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "WeMath").mkdir()  # e.g. an earlier `run --out .` result folder
    monkeypatch.chdir(tmp_path / "work")
    assert load_dataset("WeMath").path == lmu / "WeMath.tsv"


def test_unknown_name_and_bad_columns(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'MathVista'"):
        load_dataset("MathVista")
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\n1\tHow many?\n")
    with pytest.raises(UserError, match="missing column\\(s\\) image, answer"):
        load_dataset(str(bad))


def test_dangling_image_reference_is_reported(tmp_path):
    tsv = tmp_path / "custom.tsv"
    tsv.write_text("index\timage\tquestion\tanswer\n1\t7\tHow many?\t3\n")
    data = load_dataset(str(tsv))
    with pytest.raises(UserError, match="index 1: image cell '7'"):
        data.images(data.rows[0])


def test_custom_tsv_gets_mathvision_semantics_and_known_stem_keeps_its_own(tmp_path):
    assert spec_for(str(tmp_path / "held_out.tsv")).benchmark == "MathVision"
    assert spec_for(str(tmp_path / "held_out.tsv")).name == "held_out"
    assert spec_for(str(tmp_path / "WeMath.tsv")).benchmark == "WeMath"


def test_mathverse_prompt_is_question_or_query_cot(lmu):
    data = load_dataset("MathVerse_MINI")
    row = data.rows[0]
    assert build_prompt(row, data.spec) == row["question"]
    assert build_prompt(row, KNOWN_DATASETS["MathVerse_MINI_Vision_Only_cot"]) == row["query_cot"]
    assert answer_options(row, data.spec) == {"A": "3", "B": "4", "C": "5", "D": "7"}
    assert answer_options(data.rows[2], data.spec) is None  # free-form


def test_wemath_prompt_layout(lmu):
    data = load_dataset("WeMath")
    first, second = data.rows[0], data.rows[1]
    assert build_prompt(first, data.spec) == (
        "Question: What is the perimeter of the square?\n"
        "Options:\nA. 8cm\nB. 12cm\nC. 16cm\nD. 20cm\nE. No correct answer\n"
    )
    assert build_prompt(second, data.spec).startswith(
        "Hint: The square's area is 9cm^2.\nQuestion: What is the side length of the square?\nOptions:\nA. 3cm\n")
    assert list(answer_options(data.rows[2], data.spec)) == ["A", "B", "C", "D"]  # empty E left out


def test_mathvision_prompt_and_choices(lmu):
    data = load_dataset("MathVision_MINI")
    assert build_prompt(data.rows[1], data.spec) == data.rows[1]["question"]
    assert answer_options(data.rows[1], data.spec)["B"] == "square"
    assert answer_options(data.rows[0], data.spec) is None  # choices "[]": free-form


def test_write_dataset_tsv_round_trip(tmp_path):
    from PIL import Image

    from dft_mm.evaluation.vlm.datasets import write_dataset_tsv

    red, blue = Image.new("RGB", (28, 28), "red"), Image.new("RGB", (56, 28), "blue")
    path = write_dataset_tsv(tmp_path / "set.tsv", [
        {"index": 1, "image": red, "question": "Colour?", "answer": "red", "category": "colour"},
        {"index": 2, "image": [red, blue], "question": "How many images?", "answer": 2, "choices": "['1', '2']"},
        {"index": 3, "image": "1", "question": "Same image?", "answer": "yes"},
    ])
    data = load_dataset(str(path))
    assert data.columns == ["index", "image", "question", "answer", "category", "choices"]
    assert [image.size for image in data.images(data.rows[1])] == [(28, 28), (56, 28)]
    assert data.images(data.rows[2])[0].getpixel((14, 14))[0] > 200  # row 1's red image
    assert answer_options(data.rows[1], data.spec) == {"A": "1", "B": "2"}
    with pytest.raises(UserError, match="row 1 of the dataset to write lacks answer"):
        write_dataset_tsv(tmp_path / "bad.tsv", [{"index": 1, "image": red, "question": "?"}])
