"""Evaluation: KoBEST through lm-evaluation-harness against a hand-written scorer, bad data, results and compare."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import ENGLISH_LINES, KOREAN_LINES, write_kobest
from redwhale.config.schema import EvalSection
from redwhale.core.errors import DataError
from redwhale.evaluate.benchmarks import run_benchmarks
from redwhale.evaluate.run import compare, evaluate, flatten
from redwhale.evaluate.tasks import unknown_tasks
from redwhale.evaluate.tasks.kobest import local_files

TASKS = ["boolq", "copa", "hellaswag", "sentineg", "wic"]


# ---- an independent scorer of the same prompts (the harness's kobest_*.yaml templates, written out by hand)
def prompt_and_choices(task, doc):
    if task == "boolq":
        return f"{doc['paragraph']} 질문: {doc['question']} 답변: ", ["아니오", "예"]
    if task == "copa":
        connector = {"원인": " 왜냐하면", "결과": " 그래서"}[doc["question"].strip()]
        return f"{doc['premise']} {connector}", [doc["alternative_1"], doc["alternative_2"]]
    if task == "hellaswag":
        return f"문장: {doc['context']}", [doc[f"ending_{i}"] for i in range(1, 5)]
    if task == "sentineg":
        return f"문장: {doc['sentence']} 긍부정:", ["부정", "긍정"]
    return (
        f"문장1: {doc['context_1']} 문장2: {doc['context_2']} 두 문장에서 {doc['word']}가 같은 뜻으로 쓰였나?",
        ["아니오", "예"],
    )


def loglikelihood(model, tokenizer, context, continuation):
    # the harness moves the context's trailing spaces into the continuation, then scores the continuation's tokens
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) :]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logprobs[len(ctx) + i - 1, t].item() for i, t in enumerate(cont))


def macro_f1(golds, preds):
    scores = []
    for label in sorted(set(golds) | set(preds)):
        tp = sum(g == p == label for g, p in zip(golds, preds, strict=True))
        fp = sum(p == label != g for g, p in zip(golds, preds, strict=True))
        fn = sum(g == label != p for g, p in zip(golds, preds, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def hand_scores(model, tokenizer, folder, task):
    docs = [json.loads(line) for line in (folder / f"{task}_validation.jsonl").read_text().splitlines()]
    golds, preds, norm_preds = [], [], []
    for doc in docs:
        context, choices = prompt_and_choices(task, doc)
        lls = [loglikelihood(model, tokenizer, context, " " + choice) for choice in choices]
        golds.append(doc["label"])
        preds.append(max(range(len(lls)), key=lambda i: lls[i]))
        norm_preds.append(max(range(len(lls)), key=lambda i: lls[i] / len(choices[i])))
    acc = sum(g == p for g, p in zip(golds, preds, strict=True)) / len(docs)
    acc_norm = sum(g == p for g, p in zip(golds, norm_preds, strict=True)) / len(docs)
    return {"acc": acc, "acc_norm": acc_norm, "f1": macro_f1(golds, preds)}


@pytest.fixture(scope="module")
def kobest_dir(tmp_path_factory):
    return write_kobest(tmp_path_factory.mktemp("kobest"))


def test_harness_scores_equal_the_hand_written_scorer(kobest_dir, tied_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tied_llama_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tied_llama_dir))
    names = [f"kobest_{t}" for t in TASKS]
    result = run_benchmarks(model, tokenizer, ["kobest"], kobest_dir, "test", [0], batch_size=4)["0-shot"]
    assert set(result) == set(names)
    for task in TASKS:
        expected = hand_scores(model, tokenizer, kobest_dir, task)
        got = result[f"kobest_{task}"]
        assert got["examples"] == 20  # the validation split, for want of a test split
        assert got["acc"] == pytest.approx(expected["acc"]), task
        assert got["f1"] == pytest.approx(expected["f1"]), task
        if task == "hellaswag":
            assert got["acc_norm"] == pytest.approx(expected["acc_norm"])


def test_few_shot_draws_from_train(kobest_dir, tied_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tied_llama_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tied_llama_dir))
    result = run_benchmarks(model, tokenizer, ["kobest_sentineg"], kobest_dir, "test", [0, 2], limit=6, batch_size=4)
    assert set(result) == {"0-shot", "2-shot"} and result["2-shot"]["kobest_sentineg"]["examples"] == 6


def test_unknown_task_names_are_found_before_any_work():
    assert unknown_tasks(["kobest", "kobest_boolk", "arc_easy"]) == [
        (1, "unknown KoBEST task 'kobest_boolk' (did you mean 'kobest_boolq'?)")
    ]


def test_malformed_line_names_file_and_line(tmp_path, kobest_dir):
    for task in TASKS:
        for split in ("train", "validation"):
            (tmp_path / f"{task}_{split}.jsonl").write_bytes((kobest_dir / f"{task}_{split}.jsonl").read_bytes())
    path = tmp_path / "copa_validation.jsonl"
    path.write_text(path.read_text() + "{not json}\n")
    with pytest.raises(DataError, match=r"copa_validation.jsonl:21: invalid JSON"):
        local_files(tmp_path, TASKS, "test")
    path.write_text('{"premise": "p", "question": "결과", "label": 1}\n')
    with pytest.raises(DataError, match=r"copa_validation.jsonl:1: missing fields alternative_1, alternative_2"):
        local_files(tmp_path, TASKS, "test")
    path.write_text('{"premise": "p", "question": "결과", "alternative_1": "a", "alternative_2": "b", "label": 5}\n')
    with pytest.raises(DataError, match="label must be an integer in 0..1"):
        local_files(tmp_path, TASKS, "test")


def test_missing_task_file_names_the_task(tmp_path, kobest_dir):
    (tmp_path / "boolq_validation.jsonl").write_bytes((kobest_dir / "boolq_validation.jsonl").read_bytes())
    with pytest.raises(DataError, match="KoBEST task wic: no wic_test.jsonl"):
        local_files(tmp_path, ["boolq", "wic"], "test")


def test_results_file_and_comparison(tmp_path, kobest_dir, tied_llama_dir, extended_tied_dir, bpe_tokenizer_dir):
    section = EvalSection(
        tasks=["kobest_copa"],
        data=kobest_dir,
        limit=5,
        batch_size=4,
        korean_prompts=["대한민국은"],
        english_prompts=[],
        max_new_tokens=3,
    )
    base = evaluate(
        str(tied_llama_dir), tmp_path / "base.json", KOREAN_LINES, ENGLISH_LINES, section, True, label="base"
    )
    adapted = evaluate(
        str(extended_tied_dir),
        tmp_path / "adapted.json",
        KOREAN_LINES,
        ENGLISH_LINES,
        section,
        True,
        base_tokenizer=str(bpe_tokenizer_dir),
        label="adapted",
    )
    saved = json.loads((tmp_path / "adapted.json").read_text())
    assert saved["versions"]["transformers"] and saved["data"]["korean_text"]["documents"] == len(KOREAN_LINES)
    assert saved["tokenizer"]["ric"] < 0.6  # the merged tokenizer needs far fewer tokens for Korean
    assert math.isfinite(saved["korean_bpb"]) and math.isfinite(saved["english_bpb"])
    assert saved["generations"][0]["prompt"] == "대한민국은" and isinstance(saved["generations"][0]["output"], str)
    assert set(flatten(base)) == {
        "korean_bpb",
        "english_bpb",
        "korean_chars_per_token",
        "kobest_copa/0-shot/acc",
        "kobest_copa/0-shot/f1",
    }
    table = compare(base, adapted)
    assert "| korean_chars_per_token |" in table and "| base | adapted |" in table
    assert table.count("\n") == len(flatten(base)) + 2
