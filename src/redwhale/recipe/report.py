"""The report of a run: one self-contained HTML page (plots inlined) and its Markdown twin.

Sections, each drawn from the artifacts of one phase (:mod:`redwhale.recipe.artifacts`) and left out, marked "not
done yet", when that phase has not finished: headline figures; corpus (documents dropped, by reason; near-duplicate
candidates confirmed and rejected); tokenizer (the sweep, the size chosen and the rule that chose it); initialisation
comparison; training (loss against tokens with stage boundaries; throughput, and peak memory measured beside the
plan's figure and the plan's full fine-tune); evaluation (bits per byte, benchmark tasks, what ran and why); greedy
generations of both models; after the adaptation (GGUF files, chat vector). Nothing here loads a model, so a report
can be drawn while a run is still going (``redwhale report RUN_DIR``).
"""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

from redwhale.core.io import atomic_write_text
from redwhale.evaluate.run import flatten
from redwhale.recipe.artifacts import (
    AdaptedTokenizer,
    Evaluation,
    Exported,
    ExtendedModel,
    PreparedCorpus,
    TrainedModel,
    read_json,
)
from redwhale.recipe.plan import artifact_of
from redwhale.recipe.rundir import RunDir
from redwhale.tokenizer.adapt import describe_rule
from redwhale.train.metrics import read_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the non-interactive backend)

CSS = """
body{font-family:-apple-system,'Segoe UI','Noto Sans KR','Noto Sans CJK KR','Apple SD Gothic Neo','Malgun Gothic',
Roboto,sans-serif;max-width:1040px;margin:2rem auto;
padding:0 1rem;color:#1d2430;line-height:1.5}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e4e7ec;padding-bottom:.3rem;margin-top:2.2rem}
.sub{color:#5b6472}table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}
th,td{border:1px solid #d8dde5;padding:.32rem .6rem;text-align:right}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #e4e7ec;border-radius:6px}
.good{color:#11703a;font-weight:600}.bad{color:#b42318;font-weight:600}.todo{color:#8a6d00}
.gen td,.gen th{text-align:left;vertical-align:top;white-space:pre-wrap;max-width:420px}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f7f8fa;border-radius:8px;padding:.7rem 1rem;min-width:180px}
.card b{display:block;font-size:1.35rem}
"""


@dataclass
class Page:
    """The report being built: each part is written once, as HTML and as Markdown."""

    folder: Path
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def section(self, title: str, text: str = "") -> None:
        self.html.append(f"<h2>{html.escape(title)}</h2>" + (f"<p>{html.escape(text)}</p>" if text else ""))
        self.md.append(f"## {title}\n\n" + (f"{text}\n" if text else ""))

    def todo(self, title: str, phase: str) -> None:
        self.html.append(f"<h2>{html.escape(title)}</h2><p class='todo'>Not done yet (phase {phase}).</p>")
        self.md.append(f"## {title}\n\n_Not done yet (phase {phase})._\n")

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(
            "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>" + cells + "</table>"
        )
        md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
        self.md.append(md + "".join("| " + " | ".join(str(c) for c in row) + " |\n" for row in rows))

    def image(self, path: Path) -> None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')
        self.md.append(f"![{path.stem}]({path.name})\n")

    def raw(self, html_text: str, md_text: str) -> None:
        self.html.append(html_text)
        self.md.append(md_text)


def _cards(page: Page, tokenizer: AdaptedTokenizer | None, evaluation: Evaluation | None) -> None:
    base = read_json(evaluation.base_json) if evaluation else None
    adapted = read_json(evaluation.adapted_json) if evaluation else None
    if not base or not adapted:
        return
    ko = adapted["korean_bpb"] / base["korean_bpb"] - 1
    en = adapted["english_bpb"] / base["english_bpb"] - 1
    tok = adapted.get("tokenizer", {})
    cards = [
        ("Korean bits/byte", f"{base['korean_bpb']:.3f} → {adapted['korean_bpb']:.3f}", f"{ko:+.1%}", ko < 0),
        ("English bits/byte", f"{base['english_bpb']:.3f} → {adapted['english_bpb']:.3f}", f"{en:+.1%}", en <= 0.05),
    ]
    if "base" in tok:
        cards.append(
            (
                "Korean chars/token",
                f"{tok['base']['chars_per_token']:.2f} → {tok['model']['chars_per_token']:.2f}",
                f"vocab +{tokenizer.added_tokens:,}" if tokenizer else "",
                True,
            )
        )
    page.raw(
        "<div class='cards'>"
        + "".join(
            f"<div class='card'>{html.escape(t)}<b>{html.escape(v)}</b>"
            f"<span class='{'good' if ok else 'bad'}'>{html.escape(c)}</span></div>"
            for t, v, c, ok in cards
        )
        + "</div>",
        "".join(f"- **{t}**: {v} ({c})\n" for t, v, c, _ in cards),
    )


def _corpus(page: Page, prepared: PreparedCorpus | None) -> None:
    stats = read_json(prepared.stats) if prepared else None
    if not stats:
        return page.todo("Corpus", "prepare")
    s = stats["summary"]
    masked = ", ".join(f"{k} {v}" for k, v in s["pii_masked"].items()) or "none"
    page.section(
        "Corpus",
        f"{s['documents_in']:,} documents read, {s['documents_kept']:,} kept ({s['splits'].get('train', 0):,} train, "
        f"{s['splits'].get('heldout', 0):,} held out); {s['malformed_lines']:,} malformed input lines; personal data "
        f"masked: {masked}.",
    )
    rows = [[r.replace("_", " "), f"{n:,}"] for r, n in sorted(s["dropped_by_reason"].items(), key=lambda kv: -kv[1])]
    page.table(["dropped because", "documents"], rows)
    pairs = s.get("near_duplicates") or {}
    if pairs:
        page.table(
            ["near-duplicate pairs", "count"],
            [
                ["LSH candidates", f"{pairs.get('candidate', 0):,}"],
                ["confirmed (Jaccard)", f"{pairs.get('confirmed', 0):,}"],
                ["rejected", f"{pairs.get('rejected', 0):,}"],
            ],
        )


def _tokenizer(page: Page, tokenizer: AdaptedTokenizer | None) -> None:
    sweep = read_json(tokenizer.sweep_json) if tokenizer else None
    choice = read_json(tokenizer.choice) if tokenizer else None
    if not sweep or not choice:
        return page.todo("Tokenizer", "tokenizer")
    audit = choice["audit"]
    page.section(
        "Tokenizer",
        f"Merged at {choice['size']:,}: +{choice['added_tokens']:,} tokens ({choice['why']}; knee {choice['knee']:,}, "
        f"rule: {describe_rule(choice)} in the {choice['training_tokens']:,} planned training tokens; "
        "the rule comes from bench/cpt_explore.py: with calibrated init every larger size learned more Korean at equal "
        "training tokens, 8k < 20k (the knee) < 40k < 80k, down to 80k at 40,960 tokens, where its new tokens occur "
        "0.4 times on average). "
        f"Base ids unchanged: {audit['base_ids_unchanged']}; non-Korean text identical: "
        f"{audit['non_target_identical']:.0%}; round trip: {audit['round_trip']:.0%}; dead tokens: "
        f"{audit['dead_tokens']}.",
    )
    png = page.folder / "sweep.png"  # beside the report, so that the Markdown twin's link is relative
    shutil.copyfile(tokenizer.sweep_png, png)
    page.image(png)
    expected = choice["expected_occurrences"]
    rows = [
        [
            f"{r['size']:,}" + (" (merged)" if r["size"] == choice["size"] else ""),
            f"{r['added_tokens']:,}",
            f"{r['rec']:.3f}",
            f"{r['ric']:.3f}",
            f"{r['chars_per_token']:.2f}",
            _occurrences(expected.get(str(r["size"]), 0.0)),
        ]
        for r in sweep["rows"]
    ]
    page.table(["size", "added", "REC", "RIC", "chars/token", "expected occurrences in budget"], rows)


def _occurrences(value: float) -> str:
    """Expected occurrences: two significant digits below 10 (a budget may give a new token less than one)."""
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"


def _init(page: Page, extended: ExtendedModel | None) -> None:
    compare = read_json(extended.compare_json) if extended else None
    if extended is None:
        return page.todo("Initialisation of the new tokens", "extend")
    if not compare:
        if extended.comparison:
            page.section("Initialisation of the new tokens", f"The run uses {extended.init}; the comparison of "
                         f"init methods was {extended.comparison}.")  # fmt: skip
        return
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
    page.section("Initialisation of the new tokens", f"Before any training; the run uses {extended.init}.")
    page.table(["method", "Korean bits/byte", "vs base", "English bits/byte", "vs base"], rows)


def plot_loss(metrics: list[dict[str, Any]], stages: list[dict[str, Any]], path: Path) -> Path:
    """Loss against tokens, one colour per stage, with the stage boundaries."""
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    names = list(dict.fromkeys(m["stage"] for m in metrics))
    for name in names:
        rows = [m for m in metrics if m["stage"] == name]
        ax.plot([m["tokens"] for m in rows], [m["loss"] for m in rows], lw=1.4, label=name)
    boundary = 0
    for stage in stages[:-1]:
        boundary += stage["tokens"]
        ax.axvline(boundary, color="gray", ls=":", lw=1)
    ax.set_xlabel("tokens trained")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Loss by stage", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _memory(stage: dict[str, Any]) -> list[str]:
    measured, plan, full = stage.get("peak_memory_mb"), stage.get("plan_gib"), stage.get("plan_full_gib")
    return [
        f"{measured / 1024:.2f}" if measured else "",
        f"{plan:.2f}" if plan else "",
        f"{full:.2f}" if full else "",
    ]


def _english_reference(search: dict[str, Any]) -> str:
    """What auto held English to: the base model's figure (an extended model) or the start's (a summary written before
    the base's was measured holds the start's only)."""
    start = f"{search['start_english_bpb']:.4f} at the start"
    if search.get("reference") == "the base model":
        return f"{search['reference_english_bpb']:.4f} for the base model (the limit's reference), {start}"
    return start


def _search_cost(search: dict) -> str:
    """The seconds auto spent measuring English and merging (summaries before they were recorded: nothing)."""
    if "seconds" not in search:
        return ""
    return f"; {search.get('reference_seconds', 0.0) + search['seconds']:.0f} s measuring English and merging"


def _training(page: Page, trained: TrainedModel | None, running: bool) -> None:
    if trained is None:
        return page.todo("Training", "train")
    metrics = read_metrics(trained.metrics)
    stages = read_json(trained.stages_json) or []
    if not metrics and not stages:
        return page.todo("Training", "train")
    summary = read_json(trained.model / "training_summary.json") or {}
    merged, search = summary.get("merged"), summary.get("merge_search")
    text = "In progress: the stages so far." if running else ""
    if choice := read_json(trained.root / "schedule.json"):
        stages_of = {"every_layer": "every layer and the new input rows at once, with English replay",
                     "paper": "the paper's four stages (new rows, odd layers, even layers, LoRA)"}  # fmt: skip
        text = (
            f"{text} train.schedule {choice['requested']}: {stages_of.get(choice['schedule'], choice['schedule'])} "
            f"({choice['why']})."
        ).strip()
    if merged and not running:
        text = (
            f"{text} After the last stage every trained weight was moved {summary['merge_with_base']:.0%} of the way back to "
            f"the model training started from (train.merge_with_base; {merged['tensors']:,} tensors, "
            f"{merged['kept_new_rows']:,} new vocabulary rows kept as trained)."
        ).strip()
    if search and not running:
        tried = ", ".join(f"{s['weight']:.0%}: {s['english_bpb']:.4f}" for s in search["searched"])
        text = (
            f"{text} train.merge_with_base auto: English bits per byte {_english_reference(search)}, tolerance "
            f"{search['tolerance']:.0%}; after training and each weight tried: {tried} "
            f"({'within' if search['within'] else 'still above the tolerance at the largest weight'})"
            f"{_search_cost(search)}."
        ).strip()
    page.section("Training", text)
    if metrics:
        page.image(plot_loss(metrics, stages, page.folder / "loss.png"))
    rows = [
        [
            s["stage"],
            f"{s['tokens']:,}",
            f"{s['seconds']:.0f}",
            f"{s['tokens_per_s'] or 0:,.0f}",
            *_memory(s),
            f"{s['final_loss']:.3f}" if s.get("final_loss") else "",
        ]
        for s in stages
    ]
    measure = stages[0].get("memory_measure", "") if stages else ""
    page.table(
        [
            "stage",
            "tokens",
            "seconds",
            "tokens/s",
            f"peak GiB ({measure})",
            "plan GiB",
            "full fine-tune GiB (plan)",
            "final loss",
        ],
        rows,
    )


def _evaluation(page: Page, evaluation: Evaluation | None) -> None:
    base = read_json(evaluation.base_json) if evaluation else None
    adapted = read_json(evaluation.adapted_json) if evaluation else None
    if not base or not adapted:
        return page.todo("Evaluation", "eval")
    left, right = flatten(base), flatten(adapted)
    rows = []
    for key in sorted(set(left) | set(right), key=lambda k: ("/" in k, k)):
        a, b = left.get(key), right.get(key)
        change = "" if a is None or b is None else f"{b - a:+.4f}"
        rows.append([key, "" if a is None else f"{a:.4f}", "" if b is None else f"{b:.4f}", change])
    ran = "ran" if evaluation.benchmarks_ran else "did not run"
    page.section(
        "Evaluation",
        f"Held-out Korean and English text, the same bytes for both models. Benchmark tasks {ran}: "
        f"{evaluation.benchmarks_reason}.",
    )
    page.table(["metric", "base", "adapted", "change"], rows)


def _generations(page: Page, evaluation: Evaluation | None) -> None:
    base = read_json(evaluation.base_json) if evaluation else None
    adapted = read_json(evaluation.adapted_json) if evaluation else None
    if not base or not adapted or not base.get("generations"):
        return
    pairs = list(zip(base["generations"], adapted["generations"], strict=True))
    page.raw(
        "<h2>Generations (greedy)</h2><table class='gen'><tr><th>prompt</th><th>base</th><th>adapted</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(b['prompt'])}</td><td>{html.escape(b['output'])}</td>"
            f"<td>{html.escape(a['output'])}</td></tr>"
            for b, a in pairs
        )
        + "</table>",
        "## Generations (greedy)\n\n"
        + "".join(f"**{b['prompt']}**\n- base: {b['output']!r}\n- adapted: {a['output']!r}\n\n" for b, a in pairs),
    )


def _after(page: Page, exported: Exported | None) -> None:
    summary = read_json(exported.summary_json) if exported else None
    if not summary:
        return
    problems = summary.get("vllm_problems") or []
    vllm = "the adapted model folder loads as vLLM expects" if not problems else "vLLM: " + "; ".join(problems)
    page.section("After the adaptation", vllm + ".")
    rows = []
    for kind, item in summary.get("gguf", {}).items():
        check = item.get("llama_cpp_check") or "not run (llama-cpp-python not installed)"
        rows.append([f"GGUF {kind}", Path(item["path"]).name, f"{item['bytes'] / 2**20:,.1f} MiB", check])
    vector = summary.get("chat_vector")
    if vector:
        rows.append(["chat vector", Path(vector["out"]).name, f"scale {vector['scale']:g}", vector.get("note", "")])
    if rows:
        page.table(["output", "file", "size", "check"], rows)


def write_report(
    out: Path,
    title: str,
    prepared: PreparedCorpus | None = None,
    tokenizer: AdaptedTokenizer | None = None,
    extended: ExtendedModel | None = None,
    trained: TrainedModel | None = None,
    evaluation: Evaluation | None = None,
    exported: Exported | None = None,
    training_running: bool = False,
) -> Path:
    """Write ``report.html`` and ``report.md`` into ``out`` from whatever artifacts exist; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    _cards(page, tokenizer, evaluation)
    _corpus(page, prepared)
    _tokenizer(page, tokenizer)
    _init(page, extended)
    _training(page, trained, training_running)
    _evaluation(page, evaluation)
    _generations(page, evaluation)
    _after(page, exported)
    document = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        "<p class='sub'>RedWhale recipe: corpus, tokenizer, initialisation, training stages, evaluation.</p>"
        + "".join(page.html)
        + "</body></html>"
    )
    atomic_write_text(out / "report.html", document)
    atomic_write_text(out / "report.md", f"# {title}\n\n" + "\n".join(page.md))
    return out / "report.html"


def report_now(run_root: Path, out: Path | None = None) -> Path:
    """A report of a run as it stands (finished phases, and the training so far), written to ``out`` (default
    ``<run>/report-now``) without touching the run's own folders."""
    run_dir = RunDir(run_root)
    made = {name: artifact_of(run_dir, name) for name in ("prepare", "tokenizer", "extend", "train", "eval", "export")}
    running = made["train"] is None and (run_root / "train.partial").is_dir()
    trained = made["train"] or (TrainedModel(run_root / "train.partial") if running else None)
    title = f"redwhale run {run_root.name} (as it stands)"
    return write_report(
        out or run_root / "report-now",
        title,
        prepared=made["prepare"],
        tokenizer=made["tokenizer"],
        extended=made["extend"],
        trained=trained,
        evaluation=made["eval"],
        exported=made["export"],
        training_running=running,
    )
