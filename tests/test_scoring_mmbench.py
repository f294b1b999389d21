"""MMBench choice extraction, CircularEval and the submission file."""

import csv
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from llava.eval.scoring.mmbench import circular_eval, extract_choice, read_tsv, write_submission

COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
           "l2-category", "comment", "split"]


def _row(index: int, opts: list[str], answer: str, cat: str = "attr") -> dict:
    padded = opts + [""] * (4 - len(opts))
    return dict(zip(COLUMNS, [str(index), "Q?", "", *padded, answer, cat, "aW1n", "src", "l2", "", "dev"]))


ROWS = [
    # base 0: 3 options, 3 rotations, all answered right
    _row(0, ["cat", "dog", "cow"], "B"), _row(1_000_000, ["dog", "cow", "cat"], "A"),
    _row(2_000_000, ["cow", "cat", "dog"], "C"),
    # base 1: 4 rotations, the last one wrong
    _row(1, ["a", "b", "c", "d"], "D"), _row(1_000_001, ["b", "c", "d", "a"], "C"),
    _row(2_000_001, ["c", "d", "a", "b"], "B"), _row(3_000_001, ["d", "a", "b", "c"], "A"),
    # base 2: 2 rotations, one needs a GPT fallback
    _row(2, ["yes", "no"], "A", "other"), _row(1_000_002, ["no", "yes"], "B", "other"),
]
PREDS = {0: "B", 1_000_000: "A. dog", 2_000_000: "(C)", 1: "D", 1_000_001: "C", 2_000_001: "The answer is B",
         3_000_001: "B", 2: "I am unsure", 1_000_002: "yes"}
ANSWERS = [{"question_id": k, "prompt": "p", "text": v, "round_id": 0, "options": [], "option_char": []}
           for k, v in PREDS.items()]


def test_extract_choice() -> None:
    opts = {"A": "dog", "B": "cat", "C": "cow"}
    for text, want in [("A", "A"), ("A.", "A"), ("B,", "B"), ("C:", "C"), ("A)", "A"), ("(B)", "B"),
                       ("It is C, cow", "C"), ("A cat sits there", "B"), ("I am unsure", None), ("D", None)]:
        assert extract_choice(text, opts) == want, text


def test_circular_eval() -> None:
    m = circular_eval(ROWS, ANSWERS)
    assert m["circular_accuracy"] == pytest.approx(100 / 3)  # only base 0
    assert m["single_pass_accuracy"] == pytest.approx(200 / 3)  # rows 0 and 1 right, 2 needs fallback
    assert (m["base_questions"], m["rows"], m["missing_rows"], m["gpt_fallback_rows"]) == (3, 9, 0, 1)
    assert m["categories"] == {"attr": 50.0, "other": 0.0}


def test_submission_file(tmp_path: Path) -> None:
    tsv = tmp_path / "mmbench_dev.tsv"
    with open(tsv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(ROWS)
    rows = read_tsv(tsv)
    assert len(rows) == 9
    out = write_submission(rows, ANSWERS, tmp_path / "upload" / "exp.xlsx")
    table = read_xlsx(out)
    assert table[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert table[2][0] == 1000000 and table[2][6] == "A. dog"  # integer column written as numbers


def read_xlsx(path: Path) -> list[list]:
    """The first sheet of an .xlsx as rows of values (numbers as int / float), read with the standard library."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as book:
        assert {"[Content_Types].xml", "_rels/.rels", "xl/workbook.xml"} <= set(book.namelist())
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
    rows = []
    for row in sheet.iter(f"{{{ns['m']}}}row"):
        values = {}
        for cell in row.findall("m:c", ns):
            col = "".join(ch for ch in cell.get("r") if ch.isalpha())
            index = sum((ord(ch) - 64) * 26 ** k for k, ch in enumerate(reversed(col))) - 1
            if cell.get("t") == "inlineStr":
                values[index] = "".join(t.text or "" for t in cell.iter(f"{{{ns['m']}}}t"))
            else:
                number = float(cell.find("m:v", ns).text)
                values[index] = int(number) if number.is_integer() else number
        rows.append([values.get(i) for i in range(max(values) + 1)] if values else [])
    return rows
