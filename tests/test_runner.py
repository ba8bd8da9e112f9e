"""``redwhale run``: every phase on a tiny model, skipping what is up to date, redoing what changed, and the hash
inputs that the phase functions' signatures declare."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import tiny_config
from redwhale.config import RunConfig, load_config, parse_config
from redwhale.config.base import all_fields, recording_reads
from redwhale.core.errors import RedwhaleError
from redwhale.recipe import plan as plan_module
from redwhale.recipe.inputs import Digests
from redwhale.recipe.plan import declared_phases, derived_values, phase_hashes
from redwhale.recipe.runner import run

REPO = Path(__file__).resolve().parents[1]


def hashes(raw: dict, digests: Digests | None = None) -> dict[str, str]:
    cfg = parse_config(raw)
    phases = declared_phases()
    return phase_hashes(cfg, phases, derived_values(cfg, phases), digests)


def changed(before: dict, after: dict) -> list[str]:
    return [name for name in before if before[name] != after[name]]


#: Fields no phase of the tiny run reads, because the branch that reads them is not taken there (each is read in
#: the code named; a field missing from both the run's reads and this list fails the test).
OTHER_BRANCHES = {
    ("PrepareSection", "executor_options"): "executors.make_executor, Slurm and Ray only",
    ("PrepareSection", "lid_min_score"): "filters.ScriptFilter, with a fastText model",
    ("PrepareSection", "max_bits_per_byte"): "pipeline.filter_steps, with a perplexity model",
    ("TrainSection", "accelerate_config"): "train.run.launch_command, with processes > 1",
    ("TrainSection", "global_batch_size"): "train.plan.batch_layout, with micro_batch_size auto",
    ("TrainSection", "english_tolerance"): "train.loop.Trainer._finish, with merge_with_base auto (test_train.py)",
    ("TrainSection", "english_check_chars"): "phases.train_phase, with merge_with_base auto (this test sets 0.25)",
    ("ChatVectorSection", "instruct"): "phases.export_phase, with export.chat_vector",
    ("ChatVectorSection", "base"): "phases.export_phase, with export.chat_vector",
    ("ChatVectorSection", "scale"): "phases.export_phase, with export.chat_vector",
    ("LoraSection", "targets"): "train.loop.wrap_lora",
    ("EvalSection", "data"): "evaluate.tasks.benchmark_decision, with benchmarks auto",
    ("EvalSection", "shots"): "evaluate.run.evaluate, when benchmarks run",
    ("EvalSection", "split"): "evaluate.run.evaluate, when benchmarks run",
    ("EvalSection", "limit"): "evaluate.run.evaluate, when benchmarks run",
    ("EvalSection", "batch_size"): "evaluate.run.evaluate, when benchmarks run",
    ("CorpusInput", "split"): "corpus.readers.make_reader, for Hugging Face datasets",
    ("TokenizerSection", "min_occurrences"): "tokenizer.adapt.choose_size, with size auto",
    ("TokenizerSection", "occurrence_quantile"): "tokenizer.adapt.choose_size, with size auto",
    ("TokenizerSection", "auto_sizes"): "tokenizer.adapt.adapt_tokenizer, with size auto",
    ("TrainSection", "schedule"): "train.plan.choose_schedule, when train.stages is not given (test_train.py)",
    ("StageSection", "tokens"): "TrainSection.stage_tokens, with per-stage tokens instead of shares",
}


def _section_classes() -> dict[str, set[str]]:
    """Class name -> the top-level config sections that hold it."""
    holders: dict[str, set[str]] = {}
    for name, field in RunConfig.model_fields.items():
        for cls, _ in all_fields_of(field.annotation):
            holders.setdefault(cls, set()).add(name)
    return holders


def all_fields_of(annotation) -> set[tuple[str, str]]:
    from redwhale.config.base import _flatten, _list_item_section, _section_type

    found: set[tuple[str, str]] = set()
    for candidate in _flatten(annotation):
        nested = _section_type(candidate) or _list_item_section(candidate)
        if nested is not None:
            found |= all_fields(nested)
    return found


@pytest.mark.slow
def test_run_every_phase_then_skip_then_redo_only_what_changed(tmp_path, tied_llama_dir, monkeypatch):
    raw = tiny_config(tmp_path, tied_llama_dir)
    raw["train"]["merge_with_base"] = 0.25  # the merge runs end to end, and the report says so
    reads: dict[str, set] = {}
    original = plan_module.declared_phases

    def recording_phases():  # every phase runs while recording the config fields it reads
        def wrap(name, function):
            def recorded(**kwargs):
                with recording_reads() as seen:
                    result = function(**kwargs)
                reads[name] = seen
                return result

            return recorded

        return [p.__class__(p.name, wrap(p.name, p.run), p.output, p.params) for p in original()]

    def recording_derived(*args, **kwargs):  # values derived from the config are inputs too (hashed)
        with recording_reads() as seen:
            values = derived_values(*args, **kwargs)
        reads["derived"] = seen
        return values

    monkeypatch.setattr("redwhale.recipe.runner.declared_phases", recording_phases)
    monkeypatch.setattr("redwhale.recipe.runner.derived_values", recording_derived)
    first = run(parse_config(raw))
    assert all(isinstance(status, dict) for status in first.phases.values()), first.phases
    root = first.run_dir
    assert (root / "train" / "model" / "model.safetensors").is_file()
    html = first.report.read_text(encoding="utf-8")
    # self-contained: every figure inline, nothing fetched
    assert html.count("data:image/png;base64,") >= 2 and not re.search(
        r"<(img|script|link)[^>]+(src|href)=\"http", html
    )
    markdown = (root / "report" / "report.md").read_text(encoding="utf-8")
    for heading in ("## Corpus", "## Tokenizer", "## Initialisation", "## Training", "## Evaluation", "## Generations"):
        assert heading in markdown
    assert "moved 25% of the way back" in markdown
    assert "1 malformed input line" in markdown and "Benchmark tasks did not run: eval.benchmarks is off" in markdown

    # every field is read by some phase (or on a branch named above), and only by phases whose hash covers it
    holders = _section_classes()
    taken = {p.name: {q.name for q in p.params if q.kind == "section"} for p in original()}
    for phase, seen in reads.items():
        for cls, field in seen if phase != "derived" else ():
            if cls != "RunConfig":
                assert holders[cls] & taken[phase], f"phase {phase} reads {cls}.{field} but does not take it"
    read = set().union(*reads.values())
    unread = {
        (c, f)
        for c, f in all_fields(RunConfig)
        if c != "RunConfig" and (c, f) not in read and (c, f) not in OTHER_BRANCHES
    }
    assert not unread, f"config fields no phase reads: {sorted(unread)}"

    again = run(parse_config(raw))
    assert set(again.phases.values()) == {"up to date"}

    lr = dict(raw, train=dict(raw["train"], stages=[dict(s, lr=0.02) for s in raw["train"]["stages"]]))
    third = run(parse_config(lr))
    statuses = {name: status if isinstance(status, str) else "ran" for name, status in third.phases.items()}
    assert statuses == {
        "prepare": "up to date",
        "tokenizer": "up to date",
        "extend": "up to date",
        "train": "ran",
        "eval": "ran",
        "export": "ran",
        "report": "ran",
    }


def test_a_phase_hash_follows_only_what_it_reads(tmp_path):
    base = tiny_config(tmp_path, tmp_path / "model")
    before = hashes(base)
    assert changed(before, hashes(dict(base, eval=dict(base["eval"], korean_chars=1200)))) == ["eval", "report"]
    sizes = hashes(dict(base, tokenizer=dict(base["tokenizer"], sizes=[400, 600])))
    assert changed(before, sizes) == ["tokenizer", "extend", "train", "eval", "export", "report"]
    # fields that change no result: where runs go, worker processes, logging
    neutral = dict(base, name="other", prepare=dict(base["prepare"], workers=3), train=dict(base["train"], log_every=5))
    assert changed(before, hashes(neutral)) == []
    # the schedule's token budget is an input of the vocabulary size (tokenizer.size: auto)
    budget = dict(base, train=dict(base["train"], tokens=1024))
    assert changed(before, hashes(budget))[0] == "tokenizer"


def test_a_corpus_file_is_hashed_by_its_content(tmp_path):
    base = tiny_config(tmp_path, tmp_path / "model")
    digests = Digests(tmp_path / "digests.json")
    before = hashes(base, digests)
    corpus = Path(base["corpus"]["inputs"][0]["path"])
    copy = tmp_path / "copy.jsonl"
    shutil.copy2(corpus, copy)  # same bytes, another name: nothing changes but the path... which is not hashed
    moved = dict(base, corpus=dict(base["corpus"], inputs=[{"path": str(copy)}]))
    assert changed(before, hashes(moved, digests)) == []
    stat = corpus.stat()
    text = corpus.read_text(encoding="utf-8")
    edited = text.replace("문서", "글자")  # same number of bytes
    assert edited != text and len(edited.encode()) == stat.st_size
    corpus.write_text(edited, encoding="utf-8")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time, as cp -p keeps
    assert changed(before, hashes(base, digests))[0] == "prepare"


def test_only_a_phase_whose_inputs_never_ran_is_one_clear_error(tmp_path, tied_llama_dir):
    raw = tiny_config(tmp_path, tied_llama_dir)
    with pytest.raises(RedwhaleError, match=r"phase train needs prepare, extend, which have not run .*--only"):
        run(parse_config(raw), only=["train"])


def test_benchmarks_auto_is_decided_once_and_recorded(tmp_path, monkeypatch):
    base = tiny_config(tmp_path, tmp_path / "model")
    auto = dict(base, eval=dict(base["eval"], benchmarks="auto"))
    monkeypatch.setattr("redwhale.evaluate.tasks.hub_reachable", lambda: False)
    offline = hashes(auto)
    monkeypatch.setattr("redwhale.evaluate.tasks.hub_reachable", lambda: True)
    online = hashes(auto)
    assert changed(offline, online) == ["eval", "report"]  # a network that comes back reruns the evaluation
    cfg = parse_config(auto)
    assert derived_values(cfg, declared_phases())["benchmarks"] == {
        "run": True,
        "why": "auto: the Hugging Face Hub answered",
    }


def test_local_benchmark_data_is_hashed_by_content(tmp_path):
    base = tiny_config(tmp_path, tmp_path / "model")
    data = tmp_path / "kobest"
    data.mkdir()
    (data / "kobest_copa_validation.jsonl").write_text('{"a": 1}\n')
    with_data = dict(base, eval=dict(base["eval"], benchmarks="on", data=str(data)))
    digests = Digests(None)
    before = hashes(with_data, digests)
    (data / "kobest_copa_validation.jsonl").write_text('{"a": 2}\n')
    assert changed(before, hashes(with_data, Digests(None))) == ["eval", "report"]


SHIPPED = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    from redwhale.recipe.checks import check

    cfg = load_config(path)
    check(cfg)
    assert cfg.name and cfg.train.stages


def test_demo_config_is_the_recipe_on_the_embedded_model():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.model.base == "smollm2-135m" and cfg.corpus.inputs[0].path == "bundled:konlpy"
    assert cfg.train.stages[0].name == "embeddings" and cfg.eval.benchmarks == "off"


def test_every_phase_declares_where_each_input_comes_from():
    phases = declared_phases()
    assert [p.name for p in phases] == ["prepare", "tokenizer", "extend", "train", "eval", "export", "report"]
    for phase in phases:
        assert phase.params and phase.params[0].kind == "context", phase.name
    assert json.dumps([[q.kind for q in p.params] for p in phases])  # every kind resolved at import


@pytest.mark.slow
def test_model_revision_remote_code_and_dtype_reach_every_load_of_the_run(tmp_path, tied_llama_dir, monkeypatch):
    """``model.revision``, ``model.trust_remote_code`` and ``model.dtype`` are honoured by every phase of ``run``:
    the base is a Hub id (served from a local folder here), and each ``from_pretrained`` call is recorded with the
    phase that made it."""
    import inspect

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_id = "example-org/tiny-llama"
    calls: list[dict] = []

    def phase_of_caller() -> str:
        names = [frame.function for frame in inspect.stack()]
        return next((n.removesuffix("_phase") for n in names if n.endswith("_phase")), "?")

    def recording(kind: str, original):
        def load(target, *args, **kwargs):
            base = str(target) == hub_id
            calls.append({"kind": kind, "phase": phase_of_caller(), "base": base, **kwargs})
            if base:  # the Hub, served from a folder (a local folder takes no revision)
                target, kwargs = str(tied_llama_dir), dict(kwargs, revision=None)
            return original(target, *args, **kwargs)

        return load

    monkeypatch.setattr(
        AutoModelForCausalLM, "from_pretrained", recording("model", AutoModelForCausalLM.from_pretrained)
    )
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording("tokenizer", AutoTokenizer.from_pretrained))
    raw = tiny_config(tmp_path, tied_llama_dir)
    raw["model"] = {"base": hub_id, "revision": "v1.0", "trust_remote_code": True, "dtype": "bfloat16"}
    raw["extend"] = dict(raw["extend"], compare=[])
    result = run(parse_config(raw))
    assert all(isinstance(status, dict) for status in result.phases.values()), result.phases

    base_loads = [c for c in calls if c["base"]]
    assert {c["phase"] for c in base_loads} >= {"tokenizer", "extend", "eval"}
    assert all(c.get("revision") == "v1.0" for c in base_loads), base_loads
    assert all(c.get("trust_remote_code") is True for c in calls), [c for c in calls if not c.get("trust_remote_code")]
    model_loads = [c for c in calls if c["kind"] == "model"]
    assert {c["phase"] for c in model_loads} >= {"extend", "train", "eval"}
    trained = [c for c in model_loads if c["phase"] == "train"]
    assert trained and all(c["dtype"] == torch.bfloat16 for c in trained)  # frozen weights in the asked dtype
    evaluated = [c for c in model_loads if c["phase"] == "eval"]
    assert evaluated and all(c["dtype"] == torch.bfloat16 for c in evaluated)
    from safetensors import safe_open

    with safe_open(str(result.run_dir / "train" / "model" / "model.safetensors"), "pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}  # noqa: SIM118 (safe_open is not iterable)
