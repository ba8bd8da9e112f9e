"""The report of a run: one self-contained HTML page (plots inlined) and its Markdown twin.

Sections: corpus (documents dropped, by reason), vocabulary sweep (plot and chosen size), initialisation comparison,
training (loss against tokens with stage boundaries; throughput and peak memory per stage), evaluation (base against
adapted: bits per byte in Korean and English, KoBEST when it ran, tokenizer efficiency), and greedy generations of
both models.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Any

from redwhale.config.schema import RunConfig
from redwhale.rundir import atomic_write_text

CSS = """
body{font-family:-apple-system,'Segoe UI','Noto Sans KR','Noto Sans CJK KR','Apple SD Gothic Neo','Malgun Gothic',
Roboto,sans-serif;max-width:1040px;margin:2rem auto;
padding:0 1rem;color:#1d2430;line-height:1.5}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e4e7ec;padding-bottom:.3rem;margin-top:2.2rem}
.sub{color:#5b6472}table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}
th,td{border:1px solid #d8dde5;padding:.32rem .6rem;text-align:right}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #e4e7ec;border-radius:6px}
.good{color:#11703a;font-weight:600}.bad{color:#b42318;font-weight:600}
.gen td,.gen th{text-align:left;vertical-align:top;white-space:pre-wrap;max-width:420px}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f7f8fa;border-radius:8px;padding:.7rem 1rem;min-width:180px}
.card b{display:block;font-size:1.35rem}
"""


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], rows: list[list[Any]]) -> tuple[str, str]:
    """The same table as HTML and as Markdown."""
    cells = lambda r: "".join(f"<td>{html.escape(str(c))}</td>" for c in r)  # noqa: E731
    h = "<table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in headers) + "</tr>"
    h += "".join(f"<tr>{cells(r)}</tr>" for r in rows) + "</table>"
    md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    md += "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)
    return h, md


def plot_training(metrics: list[dict[str, Any]], stages: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Loss against tokens with stage boundaries; throughput and peak memory per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if metrics:
        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
        tokens = [m["tokens"] for m in metrics]
        ax.plot(tokens, [m["loss"] for m in metrics], color="tab:blue", lw=1.4)
        boundary = 0
        for index, stage in enumerate(stages):
            boundary += stage["tokens"]
            if index < len(stages) - 1:
                ax.axvline(boundary, color="gray", ls=":", lw=1)
            ax.text(
                boundary - stage["tokens"] / 2,
                ax.get_ylim()[1],
                stage["stage"],
                ha="center",
                va="top",
                fontsize=8,
                color="dimgray",
            )
        ax.set_xlabel("tokens trained")
        ax.set_ylabel("training loss (nats/token)")
        ax.set_title("Loss by stage", fontsize=10)
        fig.tight_layout()
        paths.append(folder / "loss.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    if stages:
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=120)
        names = [s["stage"] for s in stages]
        left.bar(names, [s["tokens_per_s"] or 0 for s in stages], color="tab:green")
        left.set_title("throughput (tokens/s)", fontsize=10)
        right.bar(names, [(s["peak_memory_mb"] or 0) / 1024 for s in stages], color="tab:orange")
        right.set_title("peak memory (GiB)", fontsize=10)
        for ax in (left, right):
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        fig.tight_layout()
        paths.append(folder / "stages.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def write_report(cfg: RunConfig, work: Path, outputs: dict[str, Path]) -> dict[str, Any]:
    from redwhale.phases import generations
    from redwhale.train.metrics import read_metrics

    parts: list[tuple[str, str]] = []  # (html, markdown)
    stats = _read(outputs["prepare"] / "stats.json")["summary"]
    sweep = _read(outputs["tokenizer"] / "sweep" / "sweep.json")
    merge = _read(outputs["tokenizer"] / "merged" / "merge_report.json")
    compare = _read(outputs["extend"] / "compare" / "compare_init.json")
    stages = _read(outputs["train"] / "stages.json") or []
    metrics = read_metrics(outputs["train"] / "logs" / "metrics.jsonl")
    base, adapted = _read(outputs["eval"] / "base.json"), _read(outputs["eval"] / "adapted.json")

    ko_change = adapted["korean_bpb"] / base["korean_bpb"] - 1
    en_change = adapted["english_bpb"] / base["english_bpb"] - 1
    cards = [
        (
            "Korean bits/byte",
            f"{base['korean_bpb']:.3f} → {adapted['korean_bpb']:.3f}",
            f"{ko_change:+.1%}",
            ko_change < 0,
        ),
        (
            "English bits/byte",
            f"{base['english_bpb']:.3f} → {adapted['english_bpb']:.3f}",
            f"{en_change:+.1%}",
            en_change <= 0.05,
        ),
        (
            "Korean chars/token",
            f"{sweep['base_chars_per_token']:.2f} → {adapted['tokenizer']['model']['chars_per_token']:.2f}",
            f"vocab +{merge['added_tokens']:,}",
            True,
        ),
    ]
    parts.append(
        (
            "<div class='cards'>"
            + "".join(
                f"<div class='card'>{html.escape(t)}<b>{html.escape(v)}</b><span class='{'good' if ok else 'bad'}'>"
                f"{html.escape(c)}</span></div>"
                for t, v, c, ok in cards
            )
            + "</div>",
            "".join(f"- **{t}**: {v} ({c})\n" for t, v, c, _ in cards),
        )
    )

    rows = [
        [reason.replace("_", " "), f"{n:,}"]
        for reason, n in sorted(stats["dropped_by_reason"].items(), key=lambda kv: -kv[1])
    ]
    table = _table(["dropped because", "documents"], rows)
    intro = (
        f"{stats['documents_in']:,} documents read, {stats['documents_kept']:,} kept "
        f"({stats['splits'].get('train', 0):,} train, {stats['splits'].get('heldout', 0):,} held out); "
        f"{stats['malformed_lines']:,} malformed input lines; personal data masked: "
        f"{', '.join(f'{k} {v}' for k, v in stats['pii_masked'].items()) or 'none'}."
    )
    parts.append((f"<h2>Corpus</h2><p>{html.escape(intro)}</p>{table[0]}", f"## Corpus\n\n{intro}\n\n{table[1]}"))

    rows = [
        [
            f"{r['size']:,}" + (" (chosen)" if r["size"] == merge["new_tokenizer_size"] else ""),
            f"{r['added_tokens']:,}",
            f"{r['rec']:.3f}",
            f"{r['ric']:.3f}",
            f"{r['chars_per_token']:.2f}",
        ]
        for r in sweep["rows"]
    ]
    table = _table(["size", "added", "REC", "RIC", "chars/token"], rows)
    audit = merge["audit"]
    text = (
        f"Knee (Kneedle): {sweep['chosen_size']:,}; merged at {merge['new_tokenizer_size']:,}: "
        f"+{merge['added_tokens']:,} tokens (REC {merge['rec']:.3f}); base ids unchanged: "
        f"{audit['base_ids_unchanged']}; non-Korean text identical: {audit['non_target_identical']:.0%}; "
        f"round trip: {audit['round_trip']:.0%}; dead tokens: {audit['dead_tokens']}."
    )
    sweep_png = work / "sweep.png"  # copied beside the report, so that the Markdown twin's links are relative
    shutil.copyfile(outputs["tokenizer"] / "sweep" / "sweep.png", sweep_png)
    parts.append(
        (
            f"<h2>Tokenizer</h2><p>{html.escape(text)}</p>{_image(sweep_png)}{table[0]}",
            f"## Tokenizer\n\n{text}\n\n![sweep]({sweep_png.name})\n\n{table[1]}",
        )
    )

    if compare:
        rows = [
            [
                name,
                f"{r['korean_bpb']:.4f}",
                f"{r['korean_vs_base']:.3f}x",
                f"{r['english_bpb']:.4f}",
                f"{(r['english_vs_base'] - 1) * 100:+.2f}%",
            ]
            for name, r in compare["rows"].items()
            if "korean_bpb" in r
        ]
        table = _table(["method", "Korean bits/byte", "vs base", "English bits/byte", "vs base"], rows)
        note = f"Before any training; the run uses {cfg.extend.init}."
        parts.append(
            (
                f"<h2>Initialisation of the new tokens</h2><p>{note}</p>{table[0]}",
                f"## Initialisation of the new tokens\n\n{note}\n\n{table[1]}",
            )
        )

    images = plot_training(metrics, stages, work)
    rows = [
        [
            s["stage"],
            f"{s['tokens']:,}",
            f"{s['seconds']:.0f}",
            f"{s['tokens_per_s'] or 0:,.0f}",
            f"{(s['peak_memory_mb'] or 0) / 1024:.2f}",
            f"{s['final_loss']:.3f}" if s["final_loss"] else "",
        ]
        for s in stages
    ]
    table = _table(["stage", "tokens", "seconds", "tokens/s", "peak GiB", "final loss"], rows)
    parts.append(
        (
            "<h2>Training</h2>" + "".join(_image(p) for p in images) + table[0],
            "## Training\n\n" + "".join(f"![{p.stem}]({p.name})\n\n" for p in images) + table[1],
        )
    )

    from redwhale.evaluate.run import flatten

    left, right = flatten(base), flatten(adapted)
    rows = []
    for key in sorted(set(left) | set(right), key=lambda k: (k.startswith("kobest"), k)):
        a, b = left.get(key), right.get(key)
        rows.append(
            [
                key,
                "" if a is None else f"{a:.4f}",
                "" if b is None else f"{b:.4f}",
                "" if a is None or b is None else f"{b - a:+.4f}",
            ]
        )
    table = _table(["metric", "base", "adapted", "change"], rows)
    note = "KoBEST ran." if "kobest" in base else "KoBEST did not run (no local data and no network)."
    parts.append(
        (
            f"<h2>Evaluation</h2><p>Held-out Korean and English text, same bytes for both models. {note}</p>{table[0]}",
            f"## Evaluation\n\n{note}\n\n{table[1]}",
        )
    )

    prompts = list(cfg.report.korean_prompts) + list(cfg.report.english_prompts)
    base_out = generations(cfg.model.base, prompts, cfg.report.max_new_tokens, cfg.model.cache_dir)
    adapted_out = generations(str(outputs["train"] / "model"), prompts, cfg.report.max_new_tokens)
    gen_html = (
        "<table class='gen'><tr><th>prompt</th><th>base</th><th>adapted</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(p)}</td><td>{html.escape(b)}</td><td>{html.escape(a)}</td></tr>"
            for p, b, a in zip(prompts, base_out, adapted_out, strict=True)
        )
        + "</table>"
    )
    gen_md = "".join(
        f"**{p}**\n- base: {b!r}\n- adapted: {a!r}\n\n" for p, b, a in zip(prompts, base_out, adapted_out, strict=True)
    )
    parts.append((f"<h2>Generations (greedy)</h2>{gen_html}", f"## Generations (greedy)\n\n{gen_md}"))

    title = f"redwhale run {cfg.name}: {cfg.model.base} → Korean"
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='sub'>RedWhale recipe: corpus, tokenizer, initialisation, four training stages, evaluation."
        f"</p>" + "".join(h for h, _ in parts) + "</body></html>"
    )
    atomic_write_text(work / "report.html", page)
    atomic_write_text(work / "report.md", f"# {title}\n\n" + "\n\n".join(m for _, m in parts))
    (work / "generations.json").write_text(
        json.dumps({"prompts": prompts, "base": base_out, "adapted": adapted_out}, ensure_ascii=False, indent=2)
    )
    return {"korean_bpb_change": ko_change, "english_bpb_change": en_change}
