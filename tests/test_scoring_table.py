"""Result records and the Table-1 Markdown from make_table.py."""

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval.scoring.results import MAIN_METRIC, TABLE_COLUMNS, load_results, write_result

REPO = Path(__file__).resolve().parents[1]


def _make_table():
    spec = importlib.util.spec_from_file_location("make_table", REPO / "scripts" / "make_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _write_all(d: Path) -> None:
    def extra(method: str, budget: int, **more) -> dict:
        return {"model": "llava-v1.5-7b", "method": method, "budget": budget, **more}

    write_result(d / "none" / "gqa.json", "gqa", {"accuracy": 62.0}, extra=extra("none", 576))
    write_result(d / "none" / "pope.json", "pope", {"mean_accuracy": 86.0, "mean_f1": 85.0},
                 extra=extra("none", 576, timings={"total_s": 12.5}))
    write_result(d / "none" / "mme.json", "mme", {"perception_cognition": 1860.0, "perception": 1500.0},
                 extra=extra("none", 576))
    write_result(d / "vd" / "gqa.json", "gqa", {"accuracy": 58.9},
                 extra=extra("visiondrop", 64, visual_tokens_per_layer=[576, 64]))
    write_result(d / "vd" / "pope.json", "pope", {"mean_accuracy": 81.7}, extra=extra("visiondrop", 64))
    write_result(d / "fastv" / "gqa.json", "gqa", {"accuracy": 55.8}, extra=extra("fastv", 64))
    write_result(d / "fastv" / "mme.json", "mme", {"perception_cognition": 1488.0}, extra=extra("fastv", 64))
    (d / "upload.json").write_text(json.dumps([{"question_id": 1, "answer": "x"}]))  # not a record


def test_write_and_load_results(tmp_path: Path) -> None:
    rec = write_result(tmp_path / "r.json", "scienceqa", {"accuracy": 70.0, "img_accuracy": 68.0},
                       extra={"model": "m", "config": {"k": 1}})
    assert rec["main_metric"] == "img_accuracy" == MAIN_METRIC["scienceqa"] and rec["main_value"] == 68.0
    loaded = load_results(tmp_path)
    assert len(loaded) == 1 and loaded[0]["config"] == {"k": 1}
    with pytest.raises(ValueError):
        write_result(tmp_path / "x.json", "gqa", {"accuracy": 1.0}, extra={"metrics": {}})
    with pytest.raises(KeyError):
        write_result(tmp_path / "x.json", "gqa", {"acc": 1.0})
    assert set(TABLE_COLUMNS) == {"GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "VQAv2", "VQAText", "VizWiz"}


def test_make_table(tmp_path: Path) -> None:
    _write_all(tmp_path)
    text = _make_table().build_table(load_results(tmp_path))
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = ("| Method | Tokens | Measured | Variant | GQA | MMB | MMB-CN | MME | POPE | SQA | VQAv2 | VQAText "
              "| VizWiz | Avg. |")
    assert lines[0] == header
    # Avg: none = 100%; fastv = (55.8/62 + 1488/1860)/2 = (90% + 80%)/2;
    # visiondrop = (58.9/62 + 81.7/86)/2 = (95% + 95%)/2
    assert lines[2] == "| none | 576 | – | – | 62.00 | – | – | 1860 | 86.00 | – | – | – | – | 100.0% |"
    assert lines[3] == "| fastv | 64 | – | – | 55.80 | – | – | 1488 | – | – | – | – | – | 85.0% |"
    assert lines[4] == "| visiondrop | 64 | – | – | 58.90 | – | – | – | 81.70 | – | – | – | – | 95.0% |"
    assert len(lines) == 5
    assert "overall accuracy is `metrics.accuracy`" in text


def test_make_table_cli(tmp_path: Path) -> None:
    _write_all(tmp_path)
    out = tmp_path / "table.md"
    cmd = [sys.executable, str(REPO / "scripts" / "make_table.py"), str(tmp_path), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "| visiondrop | 64 |" in proc.stdout and out.read_text() == proc.stdout


def _run_record(d: Path, run: str, bench: str, value: float, config: dict, measured: float) -> None:
    """A result JSON as the eval scripts write it (full config, its file, measured tokens)."""
    metric = MAIN_METRIC[bench]
    write_result(d / run / f"{bench}.json", bench, {metric: value},
                 extra={"model": "llava-v1.5-7b", "run": run, "method": config["method"], "budget": config["budget"],
                        "config": config, "config_file": f"/elsewhere/configs/{config['method']}/"
                        f"{'llava15_64' if config['budget'] == 64 else 'llava15'}.yaml",
                        "visual_tokens_mean": measured})


def test_ablation_is_its_own_row_named_by_what_differs(tmp_path: Path) -> None:
    from visiondrop.config import load_config

    none = load_config(REPO / "configs/none/llava15.yaml").to_dict()
    base = load_config(REPO / "configs/visiondrop/llava15_64.yaml").to_dict()
    ablation = load_config(REPO / "configs/visiondrop/llava15_64.yaml", ["merge=false"]).to_dict()
    _run_record(tmp_path, "none_llava15", "pope", 86.0, none, 576.0)
    _run_record(tmp_path, "visiondrop_llava15_64", "pope", 81.7, base, 64.0)
    _run_record(tmp_path, "visiondrop_llava15_64", "gqa", 58.9, base, 63.5)
    _run_record(tmp_path, "vd64_nomerge", "pope", 43.0, ablation, 64.0)
    for bench, version in (("pope", "git:aaaa"), ("gqa", "git:bbbb")):  # the main row from two code versions
        path = tmp_path / "visiondrop_llava15_64" / f"{bench}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "code_version": version}))
    lines = [x for x in _make_table().build_table(load_results(tmp_path)).splitlines() if x.startswith("|")]
    assert lines[2].startswith("| none | 576 | 576.0 | – | – |")
    assert lines[3] == "| visiondrop (*) | 64 | 63.5–64.0 | – | 58.90 | – | – | – | 81.70 | – | – | – | – | 95.0% |"
    assert lines[4] == "| visiondrop (merge=false) | 64 | 64.0 | – | – | – | – | – | 43.00 | – | – | – | – | 50.0% |"
    assert len(lines) == 5


def _table_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_table.py"), *args], capture_output=True,
                          text=True)


def test_make_table_errors_name_the_file(tmp_path: Path) -> None:
    _write_all(tmp_path)
    corrupt = tmp_path / "vd" / "mme.json"
    corrupt.write_text('{"benchmark": "mme", "metrics": {')
    proc = _table_cli(str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: result file {corrupt}: not valid JSON (line 1 column 34: Expecting property name " \
                          "enclosed in double quotes); fix it or move it out of the folder\n"
    corrupt.unlink()
    write_result(tmp_path / "vd_again" / "gqa.json", "gqa", {"accuracy": 40.0},
                 extra={"model": "llava-v1.5-7b", "method": "visiondrop", "budget": 64})
    proc = _table_cli(str(tmp_path))
    assert proc.returncode == 2 and "two results for visiondrop GQA with one config" in proc.stderr
    assert str(tmp_path / "vd" / "gqa.json") in proc.stderr and str(tmp_path / "vd_again" / "gqa.json") in proc.stderr
    missing = tmp_path / "resluts"
    proc = _table_cli(str(missing))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: results folder {missing} not found")
    (tmp_path / "empty").mkdir()
    proc = _table_cli(str(tmp_path / "empty"))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: no result JSONs under {tmp_path / 'empty'}")


@pytest.mark.parametrize("name", ["answer_processor", "gqa", "textvqa", "pope", "scienceqa", "mme", "mmbench",
                                  "vqav2", "vizwiz", "results"])
def test_cli_help(name: str, capsys: pytest.CaptureFixture) -> None:
    module = importlib.import_module(f"llava.eval.scoring.{name}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out
