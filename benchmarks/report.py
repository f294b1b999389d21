"""Derived numbers (throughput, ratios to the unpruned run) and the Markdown tables of an efficiency record."""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]


def _median(part: dict | None) -> float | None:
    return None if part is None else part["median"]


def throughput(result: Result) -> dict[str, float | None]:
    """Samples/s = batch / time: prefill only (TTFT) and end to end for every G."""
    lat, batch = result["latency_ms"], result["batch"]
    out = {"prefill": _per_s(batch, _median(lat["ttft"]))}
    out.update({f"G{g}": _per_s(batch, _median(s)) for g, s in lat["e2e"].items()})
    return out


def _per_s(batch: int, ms: float | None) -> float | None:
    return None if not ms else batch * 1e3 / ms


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _set_ratios(results: list[Result], reference: str, key: str, ratios_of) -> None:
    """Set `key` on every result to `ratios_of(result, reference result of the same batch label)`, or None for a
    result that did not run or has no reference."""
    refs = {r["batch_label"]: r for r in results if r["config"] == reference and r["status"] == "ok"}
    for r in results:
        base = refs.get(r["batch_label"])
        r[key] = None if r["status"] != "ok" or base is None else ratios_of(r, base)


def _unpruned_ratios(r: Result, base: Result) -> dict:
    lat, ref_lat = r["latency_ms"], base["latency_ms"]
    ratios = {
        "flops": _ratio(r["flops_per_sample"]["total"], base["flops_per_sample"]["total"]),
        "kv": _ratio(r["kv_analytic_bytes"] / r["batch"], base["kv_analytic_bytes"] / base["batch"]),
        "peak_memory": _ratio(r["peak_memory_bytes"], base["peak_memory_bytes"]),
    }
    for part in ("ttft", "prefill", "decode_per_token"):
        ratios[f"speedup_{part}"] = _ratio(_median(ref_lat[part]), _median(lat[part]))
    for g in lat["e2e"]:
        ratios[f"speedup_e2e_G{g}"] = _ratio(_median(ref_lat["e2e"][g]), _median(lat["e2e"][g]))
    for key, value in r["throughput"].items():
        ratios[f"throughput_{key}"] = _ratio(value, base["throughput"][key])
    return ratios


def add_ratios(results: list[Result], reference: str) -> None:
    """Set `ratio_to_unpruned` on every measured result: speed-ups (reference time / time), throughput, FLOPs,
    KV and peak-memory ratios (value / reference), against the reference run of the same batch label."""
    _set_ratios(results, reference, "ratio_to_unpruned", _unpruned_ratios)


TRANSFORMERS = "transformers"  # config key of the reference row (transformers' own LLaVA class, plain generate)


def _transformers_ratios(r: Result, base: Result) -> dict:
    lat, ref = r["latency_ms"], base["latency_ms"]
    ratios = {f"speedup_e2e_G{g}": _ratio(_median(ref["e2e"].get(g)), _median(s)) for g, s in lat["e2e"].items()}
    ratios["speedup_ttft"] = _ratio(_median(ref["ttft"]), _median(lat["ttft"]))
    return ratios


def add_transformers_ratios(results: list[Result]) -> None:
    """Set `ratio_to_transformers` on every measured result: end-to-end speed-up per G and TTFT speed-up against
    the transformers row of the same batch label (None without one)."""
    _set_ratios(results, TRANSFORMERS, "ratio_to_transformers", _transformers_ratios)


def decode_weight_bytes(model) -> int:
    """Bytes of the weights a decode step reads: the decoder layers, the final norm and lm_head (the embedding
    table only gives one row per token)."""
    read_per_step = [model.model.layers, model.model.norm, model.lm_head]
    return sum(p.numel() * p.element_size() for m in read_per_step for p in m.parameters())


def physical_limits(result: Result, weight_bytes: int, peak_hbm_tbs: float, peak_tflops: float) -> dict:
    """Achieved fractions of the device's limits: a decode step reads the LLM weights + the KV cache (HBM bytes/s
    against `peak_hbm_tbs`); the TTFT does the FLOPs of the run (lm_head over the last position) against
    `peak_tflops`. Percentages are None where the time is missing."""
    lat, batch = result["latency_ms"], result["batch"]
    decode, ttft = _median(lat["decode_per_token"]), _median(lat["ttft"])
    tbs = None if not decode else (weight_bytes + result["kv_analytic_bytes"]) / (decode * 1e-3) / 1e12
    tflops = None if not ttft else result["flops_per_sample_lm_head_last"] * batch / (ttft * 1e-3) / 1e12
    return {"decode_hbm_tbs": tbs, "decode_hbm_pct": None if tbs is None else 100 * tbs / peak_hbm_tbs,
            "ttft_tflops": tflops, "ttft_tflops_pct": None if tflops is None else 100 * tflops / peak_tflops,
            "weight_bytes": weight_bytes, "peak_hbm_tbs": peak_hbm_tbs, "peak_tflops": peak_tflops}


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _ms(part: dict | None, spread: bool = False) -> str:
    if part is None:
        return "–"
    text = f"{part['median']:.1f}"
    return f"{text} [{part['p10']:.1f}–{part['p90']:.1f}]" if spread else text


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _tflops(flops: float) -> str:
    t = flops / 1e12
    return f"{t:.2f}" if t >= 1 else f"{t:.3g}"


def environment_line(env: dict) -> str:
    """One line: device, driver, CUDA, library versions, dtype, attention backend, mode."""
    keys = [("gpu", ""), ("driver", "driver "), ("cuda", "CUDA "), ("torch", "torch "),
            ("transformers", "transformers "), ("dtype", ""), ("attention", "attention "), ("mode", "mode ")]
    return " · ".join(f"{prefix}{env[k]}" for k, prefix in keys if env.get(k))


def _flops_split(result: Result) -> str:
    f = result["flops_per_sample"]
    return " / ".join(f"{f[k] / 1e12:.3g}" for k in ("vision", "projector", "llm", "selection", "lm_head", "total"))


def _counts_text(counts: list[int]) -> str:
    runs: list[list[int]] = []
    for n in counts:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return ", ".join(f"{n}×{k}" for n, k in runs)


def batch_table(results: list[Result], g_short: str, g_long: str) -> list[str]:
    """Table 4 layout for one batch label."""
    head = (f"| method | # tokens | FLOPs (T/sample) | KV (MiB, batch) | peak mem (GB) | ViT / select / prefill / "
            f"decode (ms) | TTFT (ms) | e2e G={g_short} (ms) | e2e G={g_long} (ms) | speed-up G={g_short} / "
            f"G={g_long} | vs transformers G={g_short} / G={g_long} | % of limit: decode HBM / TTFT FLOP/s |")
    lines = [head, "|---" * 12 + "|"]
    for r in results:
        name = r["label"] + (f" (b={r['batch']})" if r["batch_label"] == "max" and r.get("batch") else "")
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} |" + " |" * 10)
            continue
        lat, ratio = r["latency_ms"], r["ratio_to_unpruned"] or {}
        hf, limit = r.get("ratio_to_transformers") or {}, r.get("physical") or {}
        kv = r["kv_analytic_bytes"] / 2**20
        kv_cell = _f(kv) if r["kv_allocated_bytes"] in (None, r["kv_analytic_bytes"]) else \
            f"{kv:.1f} (allocated {r['kv_allocated_bytes'] / 2**20:.1f})"
        peak = None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / 1e9
        split = " / ".join(_ms(lat[k]) for k in ("vit", "select", "prefill", "decode_per_token"))
        speed = f"{_x(ratio.get(f'speedup_e2e_G{g_short}'))} / {_x(ratio.get(f'speedup_e2e_G{g_long}'))}"
        vs_hf = f"{_x(hf.get(f'speedup_e2e_G{g_short}'))} / {_x(hf.get(f'speedup_e2e_G{g_long}'))}"
        pct = f"{_f(limit.get('decode_hbm_pct'))} % / {_f(limit.get('ttft_tflops_pct'))} %"
        lines.append(
            f"| {name} | {_f(r['average_visual_tokens'])} | {_tflops(r['flops_per_sample']['total'])} | {kv_cell} "
            f"| {_f(peak, '.2f')} | {split} | {_ms(lat['ttft'], True)} | {_ms(lat['e2e'][g_short], True)} | "
            f"{_ms(lat['e2e'][g_long], True)} | {speed} | {vs_hf} | {pct} |")
    return lines


def throughput_table(results: list[Result], labels: list[str], key: str) -> list[str]:
    """Samples/s per batch label (ratio to the unpruned run of the same label)."""
    configs = list(dict.fromkeys(r["label"] for r in results))
    cell = {(r["label"], r["batch_label"]): r for r in results}
    lines = ["| method | " + " | ".join(f"b={b}" for b in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in configs:
        cells = []
        for b in labels:
            r = cell.get((name, b))
            if r is None or r["status"] != "ok":
                cells.append("–" if r is None else r["status"])
                continue
            at = f" @b={r['batch']}" if b == "max" else ""
            ratio = (r["ratio_to_unpruned"] or {}).get(f"throughput_{key}")
            cells.append(f"{_f(r['throughput'][key])}{at} ({_x(ratio)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(record: dict) -> str:
    """The whole report: environment line, one Table-4-style table per batch, counts, throughput, graphs."""
    s = record["settings"]
    order = {key: i for i, key in enumerate(record.get("display_order", []))}
    results = sorted(record["results"], key=lambda r: order.get(r["config"], len(order)))
    labels = s["batch_labels"]
    points = [str(g) for g in s["e2e_points"]]
    g_short, g_long = str(min(s["gen_tokens"])), str(max(s["gen_tokens"]))
    out = [f"# Efficiency: {s['model']}", "", environment_line(record["environment"]), "",
           f"Mode: {record['environment'].get('mode', 'eager')}; {s['text_tokens']} text tokens + "
           f"{s.get('image') or 'one image'} per sample, identical "
           "rows (no padding). "
           f"Times: CUDA-event device time (perf_counter on CPU), median over {s['repeats']} timed runs after "
           f"{s['warmup']} warm-up runs, [p10–p90]; decode per token and G={points[-1]} from "
           f"{s['decode_repeats']} of them. TTFT = ViT + select + prefill (prefill includes splicing and the "
           "first token's lm_head). FLOPs: docs/efficiency.md, 'Protocol', with the measured per-layer counts, the "
           "ViT per sub-image, the "
           "projector over the tokens projected, lm_head over all prompt positions (paper convention). Speed-up = "
           "unpruned time / time at the same batch; \"vs transformers\" = the same against the `transformers generate` "
           "row (transformers' own LLaVA / LLaVA-NeXT class on the same weights, unpruned, plain `generate`; NeXT: "
           "its own spatial_unpad layout). % of limit: a decode step's HBM bytes (LLM weights + KV cache) / its time "
           f"against {s.get('peak_hbm_tbs', 4.8):g} TB/s, and the FLOPs of the TTFT (lm_head over the last "
           f"position) / the TTFT against {s.get('peak_tflops', 989):g} TFLOP/s.", ""]
    for b in labels:
        rows = [r for r in results if r["batch_label"] == b]
        if rows:
            out += [f"## Batch {b}", "", *batch_table(rows, g_short, g_long), ""]
    out += ["## Visual tokens per decoder layer (measured) and FLOPs per sample", "",
            "| method | per-layer counts | B | sub-images | projected | ViT / proj / LLM / select / lm_head / total "
            "(T) |", "|---|---|---|---|---|---|"]
    seen = set()
    for r in results:
        if r["status"] == "ok" and r["label"] not in seen:
            seen.add(r["label"])
            out.append(f"| {r['label']} | {_counts_text(r['visual_per_layer'])} | {r['average_visual_tokens']:.1f} | "
                       f"{r.get('n_crops', 1)} | {_f(r.get('projected_tokens'), 'd')} | {_flops_split(r)} |")
    out += ["", "## Throughput (samples/s, ratio to unpruned; at max each config at its own largest batch)", ""]
    for key, title in [("prefill", "prefill only: batch / TTFT"),
                       *[(f"G{g}", f"end to end, G={g}") for g in points if g != "1"]]:
        out += [f"### {title}", "", *throughput_table(results, labels, key), ""]
    graphs = record.get("cuda_graph_prefill") or []
    if graphs:
        out += ["## Prefill decoder layers, eager vs one CUDA graph (batch 1; no ViT, selection or lm_head)", "",
                "| method | eager (ms) | CUDA graph (ms) | graph speed-up | graph speed-up vs unpruned graph |",
                "|---|---|---|---|---|"]
        ref = next((g for g in graphs if g.get("config") == record["reference"] and "graph_layers_ms" in g), None)
        for g in sorted(graphs, key=lambda g: order.get(g["config"], len(order))):
            if "graph_layers_ms" not in g:
                out.append(f"| {g['label']} | {g.get('error', '–')} | | | |")
                continue
            vs = _ratio(_median(ref["graph_layers_ms"]), _median(g["graph_layers_ms"])) if ref else None
            out.append(f"| {g['label']} | {_ms(g['eager_layers_ms'], True)} | {_ms(g['graph_layers_ms'], True)} | "
                       f"{_x(g['graph_speedup'])} | {_x(vs)} |")
        out.append("")
    return "\n".join(out)
