"""VLMEvalKit benchmark TSVs: where they live, what they contain, how to load them.

A dataset is either one of VLMEvalKit's names (``MathVerse_MINI``, ``MathVision``,
``WeMath`` ...), read from ``$LMUData/<name>.tsv`` (default ``~/LMUData``) exactly as
VLMEvalKit stores it, or a path to any TSV in the same format. A custom TSV needs the
columns ``index, image, question, answer`` (optional ``choices``, ``category``) and is
scored with MathVision semantics; a path whose file stem is a known name (``.../WeMath.tsv``)
keeps that benchmark's semantics.

Image cells hold base64 data, a list literal of base64 strings (several images), or a
short value (<= 64 characters) naming the ``index`` of the row whose image it shares.

Example::

    ds = load_dataset("MathVision_MINI")          # ~/LMUData/MathVision_MINI.tsv
    row = ds.rows[0]; images = ds.images(row)     # list of PIL images
    write_dataset_tsv("held_out.tsv", [{"index": 1, "image": pil_image, "question": "How many?",
                                        "answer": "3", "category": "counting"}])
"""

from __future__ import annotations

import ast
import csv
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dft_mm.errors import UserError

MATHVERSE, MATHVISION, WEMATH = "MathVerse", "MathVision", "WeMath"
REQUIRED_COLUMNS = ("index", "image", "question", "answer")
# Reference images are short strings (an index); real base64 images are longer.
_REFERENCE_MAX_LEN = 64


@dataclass(frozen=True)
class DatasetSpec:
    """One VLMEvalKit dataset: benchmark family (scoring semantics), class, URL and MD5."""

    name: str
    benchmark: str
    vlmevalkit_class: str
    url: str | None = None
    md5: str | None = None


_MV = "http://opencompass.openxlab.space/utils/benchmarks/MathVerse/"
_VE = "https://opencompass.openxlab.space/utils/VLMEval/"
KNOWN_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("MathVerse_MINI", MATHVERSE, "MathVerse", _MV + "MathVerse_MINIV.tsv", "5017caca32b7fa110c350a1bea861b65"),
        DatasetSpec("MathVerse_MINI_Vision_Only", MATHVERSE, "MathVerse", _MV + "MathVerse_MINIVOnly.tsv",
                    "68a11d4680014ac881fa37adeadea3a4"),
        DatasetSpec("MathVerse_MINI_Vision_Only_cot", MATHVERSE, "MathVerse", _MV + "MathVerse_MINIVOnly.tsv",
                    "68a11d4680014ac881fa37adeadea3a4"),
        DatasetSpec("MathVerse_MINI_Vision_Dominant", MATHVERSE, "MathVerse", _MV + "MathVerse_MINIVDom.tsv",
                    "b8fb63852d261ab2aaefba29cc2414d3"),
        DatasetSpec("MathVerse_MINI_Vision_Intensive", MATHVERSE, "MathVerse", _MV + "MathVerse_MINIVInt.tsv",
                    "01cbd35be202bb0c4873a4186a63bc19"),
        DatasetSpec("MathVerse_MINI_Text_Lite", MATHVERSE, "MathVerse", _MV + "MathVerse_MINITLite.tsv",
                    "19e4b13bdd30b89a03b2e358bcfefa04"),
        DatasetSpec("MathVerse_MINI_Text_Dominant", MATHVERSE, "MathVerse", _MV + "MathVerse_MINITDom.tsv",
                    "4f5cd2fa6630ea00bb11d6fde1f6fe6a"),
        DatasetSpec("MathVision", MATHVISION, "MathVision", _VE + "MathVision.tsv", "93f6de14f7916e598aa1b7165589831e"),
        DatasetSpec("MathVision_MINI", MATHVISION, "MathVision", _VE + "MathVision_MINI.tsv",
                    "060fe4fa5d868987ce179307bd5f8a33"),
        DatasetSpec("WeMath", WEMATH, "WeMath", _VE + "WeMath.tsv", "b5e969a075f01290a542411fb7766388"),
    )
}


def lmu_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root`` if given, else ``$LMUData`` when it exists, else ``~/LMUData`` (VLMEvalKit's rule)."""
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get("LMUData")
    if env and Path(env).exists():
        return Path(env)
    return Path.home() / "LMUData"


def spec_for(dataset: str) -> DatasetSpec:
    """The spec of a known name, or of a TSV path (known stem keeps its semantics; else custom)."""
    if dataset in KNOWN_DATASETS:
        return KNOWN_DATASETS[dataset]
    stem = Path(dataset).stem
    if stem in KNOWN_DATASETS:
        return KNOWN_DATASETS[stem]
    return DatasetSpec(stem, MATHVISION, "MathVision")


def dataset_path(dataset: str, data_root: str | Path | None = None) -> Path:
    """Locate the TSV of ``dataset`` (a known name first, else a path); raise a UserError saying how to get it."""
    if dataset not in KNOWN_DATASETS:
        candidate = Path(dataset)
        if candidate.is_file():
            return candidate
        if candidate.suffix.lower() == ".tsv" or candidate.exists():
            raise UserError(f"dataset file {candidate} not found; pass an existing TSV in VLMEvalKit format "
                            f"(columns {', '.join(REQUIRED_COLUMNS)}) or one of: {', '.join(KNOWN_DATASETS)}")
        raise UserError(f"unknown dataset {dataset!r}: use one of {', '.join(KNOWN_DATASETS)} "
                        "or a path to a TSV in VLMEvalKit format")
    root = lmu_data_root(data_root)
    spec = KNOWN_DATASETS[dataset]
    path = root / f"{dataset}.tsv"
    legacy = root / spec.url.rsplit("/", 1)[-1]  # older VLMEvalKit releases kept the URL's file name
    for candidate in (path, legacy):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{path} not found (nor {legacy.name}). Download it with\n  mkdir -p {root} && wget -O {path} {spec.url}\n"
        f"(expected MD5 {spec.md5}; VLMEvalKit reads the same file), or set $LMUData / --data-root "
        "to the folder that holds it."
    )


def file_md5(path: str | Path) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _as_image_list(cell: str) -> list[str]:
    """A cell's base64 images: a list literal of strings, or one string."""
    if cell.startswith("[") and cell.endswith("]"):
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError):
            return [cell]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
    return [cell]


@dataclass
class VLMDataset:
    """A loaded benchmark: ``rows`` are dicts of the TSV's columns (``index`` as str, NaN as None)."""

    spec: DatasetSpec
    path: Path
    rows: list[dict]
    columns: list[str]

    @property
    def name(self) -> str:
        return self.spec.name

    def images(self, row: dict) -> list:
        """The row's images as RGB PIL images (index references resolved)."""
        from dft_mm.evaluation.vlm.images import decode_base64_image

        return [decode_base64_image(data) for data in _as_image_list(self._image_cell(row))]

    def _image_cell(self, row: dict) -> str:
        cell = row["image"]
        if len(cell) <= _REFERENCE_MAX_LEN:
            target = self._by_index.get(cell)
            if target is None or len(target["image"]) <= _REFERENCE_MAX_LEN:
                raise UserError(f"{self.path}: row index {row['index']}: image cell {cell!r} is neither base64 data "
                                "nor the index of a row that holds an image")
            cell = target["image"]
        return cell

    def __post_init__(self) -> None:
        self._by_index = {row["index"]: row for row in self.rows}


def read_table(path: str | Path):
    """Read a VLMEvalKit TSV/CSV/XLSX into a DataFrame of strings with NaN kept (``index`` as str)."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        frame = pd.read_excel(path, dtype=str)
    elif suffix in (".tsv", ".csv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                            na_values=[""])
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .tsv, .csv or .xlsx")
    if "index" in frame.columns:
        frame["index"] = [_normalise_index(value) for value in frame["index"]]
    return frame


def _normalise_index(value) -> str:
    """'12', '12.0' and 12 all become '12' (Excel round-trips integers as floats)."""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
        return text[:-2]
    return text


def frame_rows(frame) -> list[dict]:
    """DataFrame rows as dicts with NaN turned into None."""
    import pandas as pd

    return [{key: (None if pd.isna(value) else value) for key, value in record.items()}
            for record in frame.to_dict("records")]


def load_dataset(dataset: str, data_root: str | Path | None = None) -> VLMDataset:
    """Load a known dataset name or a TSV path; checks the required columns.

    A known file whose MD5 differs from VLMEvalKit's gets a warning on stderr (another
    release of the data), not an error.
    """
    import sys

    path = dataset_path(dataset, data_root)
    spec = spec_for(dataset)
    frame = read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a VLMEvalKit TSV needs "
                        f"{', '.join(REQUIRED_COLUMNS)} (tab-separated, header row first)")
    digest = file_md5(path) if spec.md5 and (dataset in KNOWN_DATASETS or path.stem == spec.name) else spec.md5
    if digest != spec.md5:
        print(f"warning: {path} has MD5 {digest}, VLMEvalKit expects {spec.md5} "
              f"(a different release of {spec.name}); scores may not be comparable", file=sys.stderr)
    rows = frame_rows(frame)
    for number, row in enumerate(rows, start=1):
        if not row["image"]:
            raise UserError(f"{path}: data row {number} (index {row['index']}): empty image cell")
    return VLMDataset(spec=spec, path=path, rows=rows, columns=list(frame.columns))


def _image_cell(value) -> str:
    """A PIL image (or a list of them) as base64 PNG; a string (base64 or index reference) as is."""
    from dft_mm.evaluation.vlm.images import encode_image_base64

    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return str([_image_cell(item) for item in value])
    return encode_image_base64(value)


def write_dataset_tsv(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as a VLMEvalKit TSV (every field quoted, as VLMEvalKit's ``dump`` does).

    Each row needs ``index``, ``image`` (PIL image, list of them, base64 string, or another
    row's index), ``question`` and ``answer``; other keys (``category``, ``choices`` ...)
    become columns in order of first appearance.
    """
    rows = list(rows)
    for number, row in enumerate(rows, start=1):
        missing = [column for column in REQUIRED_COLUMNS if row.get(column) is None]
        if missing:
            raise UserError(f"row {number} of the dataset to write lacks {', '.join(missing)}")
    columns = list(dict.fromkeys([*REQUIRED_COLUMNS, *(key for row in rows for key in row)]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for row in rows:
            cells = {**row, "image": _image_cell(row["image"])}
            writer.writerow(["" if cells.get(column) is None else cells[column] for column in columns])
    return path
