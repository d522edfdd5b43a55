"""`--data` resolution: file formats to LLaMA-Factory dataset_info entries, dataset names, errors."""

from __future__ import annotations

import json

import pytest

from dft_mm.analysis.dataset_spec import FILE_DATASET_NAME, describe_file, resolve_dataset
from dft_mm.errors import UserError


def _write(path, rows, jsonl=False):
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    return path


def test_alpaca_with_images(tmp_path):
    path = _write(tmp_path / "a.json", [{"instruction": "q", "input": "", "output": "a", "images": ["x.png"]}])
    assert describe_file(path) == {"formatting": "alpaca", "columns": {
        "prompt": "instruction", "query": "input", "response": "output", "images": "images"}}


def test_sharegpt_openai_messages_jsonl(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "a"}],
             "images": ["x.png"]}]
    entry = describe_file(_write(tmp_path / "m.jsonl", rows, jsonl=True))
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert entry["tags"]["role_tag"] == "role" and entry["tags"]["assistant_tag"] == "assistant"


def test_sharegpt_conversations_human_gpt_and_user_assistant(tmp_path):
    human = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "s"}]
    entry = describe_file(_write(tmp_path / "h.json", human))
    assert entry["columns"] == {"messages": "conversations", "system": "system"}
    assert (entry["tags"]["user_tag"], entry["tags"]["assistant_tag"]) == ("human", "gpt")
    user = [{"conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}]
    entry = describe_file(_write(tmp_path / "u.json", user))
    assert (entry["tags"]["user_tag"], entry["tags"]["assistant_tag"]) == ("user", "assistant")


def test_file_resolves_to_a_one_entry_dataset_info_with_media_dir(tmp_path):
    (tmp_path / "data").mkdir()
    path = _write(tmp_path / "data" / "a.json", [{"instruction": "q", "output": "a"}])
    spec = resolve_dataset(str(path), None, tmp_path / "work")
    info = json.loads((tmp_path / "work" / "dataset_info.json").read_text())
    assert spec.dataset == FILE_DATASET_NAME and info[FILE_DATASET_NAME]["file_name"] == str(path.resolve())
    assert spec.media_dir == str(tmp_path / "data")


def test_dataset_name_and_errors(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"wethink": {"file_name": "w.json"}}))
    assert resolve_dataset("wethink", str(tmp_path), tmp_path / "work").dataset_dir == str(tmp_path.resolve())
    with pytest.raises(UserError, match="dataset other not defined.*defined: wethink"):
        resolve_dataset("wethink,other", str(tmp_path), tmp_path / "work")
    with pytest.raises(UserError, match="--dataset-dir"):
        resolve_dataset("other", None, tmp_path / "work")
    with pytest.raises(UserError, match=r"cannot tell the data format.*\['prompt'\]"):
        resolve_dataset(str(_write(tmp_path / "bad.json", [{"prompt": "x"}])), None, tmp_path / "work")
    with pytest.raises(UserError, match="empty"):
        resolve_dataset(str(_write(tmp_path / "empty.json", [])), None, tmp_path / "work")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_dataset(str(tmp_path / "broken.jsonl"), None, tmp_path / "work")
