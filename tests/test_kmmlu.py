"""KMMLU as a benchmark plugin: local CSV files in HAERAE-HUB/KMMLU's layout, scored by the harness's own
``kmmlu_<subject>`` tasks, against a hand-written scorer of the same prompt."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import KOREAN_LINES
from redwhale.core.errors import DataError
from redwhale.evaluate.benchmarks import run_benchmarks
from redwhale.evaluate.tasks import unknown_tasks
from redwhale.evaluate.tasks.kmmlu import expand, specs

SUBJECTS = {"kmmlu_accounting": "Accounting", "kmmlu_korean_history": "Korean-History"}


def write_kmmlu(folder, rows=6):
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for index, subject in enumerate(SUBJECTS.values()):
        for split, count in (("dev", 5), ("test", rows)):
            with open(folder / "data" / f"{subject}-{split}.csv", "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["question", "answer", "A", "B", "C", "D", "Category"])
                writer.writeheader()
                for i in range(count):
                    line = KOREAN_LINES[(i + 3 * index) % len(KOREAN_LINES)]
                    options = [KOREAN_LINES[(i + k + 1) % len(KOREAN_LINES)][:12] for k in range(4)]
                    writer.writerow(dict(question=line, answer=(i % 4) + 1, A=options[0], B=options[1], C=options[2],
                                         D=options[3], Category=subject))  # fmt: skip
    return folder


def hand_accuracy(model, tokenizer, path):
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    correct = 0
    for row in rows:
        context = f"{row['question'].strip()}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}\n정답："
        scores = []
        for letter in "ABCD":
            whole = tokenizer(context + " " + letter, add_special_tokens=False)["input_ids"]
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(logprobs[len(ctx) + i - 1, t].item() for i, t in enumerate(whole[len(ctx) :])))
        correct += max(range(4), key=lambda i: scores[i]) == int(row["answer"]) - 1
    return correct / len(rows)


def test_local_kmmlu_scores_equal_the_hand_written_scorer(tmp_path, tied_llama_dir):
    data = write_kmmlu(tmp_path / "kmmlu")
    model = AutoModelForCausalLM.from_pretrained(str(tied_llama_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tied_llama_dir))
    result = run_benchmarks(model, tokenizer, list(SUBJECTS), data, "test", [0], batch_size=4)["0-shot"]
    for task, subject in SUBJECTS.items():
        assert result[task]["examples"] == 6
        assert result[task]["acc"] == pytest.approx(
            hand_accuracy(model, tokenizer, data / "data" / f"{subject}-test.csv")
        )


def test_kmmlu_names_and_bad_files(tmp_path):
    assert len(expand("kmmlu")) == 45 and "kmmlu_korean_history" in expand("kmmlu")
    assert unknown_tasks(["kmmlu_acounting"]) == [
        (0, "unknown KMMLU subject 'kmmlu_acounting' (did you mean 'kmmlu_accounting'?)")
    ]
    data = write_kmmlu(tmp_path / "k")
    bad = data / "data" / "Accounting-test.csv"
    bad.write_text("question,answer,A,B,C\nq,1,a,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column D"):
        specs(["kmmlu_accounting"], data, "test")
