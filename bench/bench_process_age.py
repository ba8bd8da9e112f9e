"""Does one process train slower the longer it lives? The same short stage (the default even-layers stage, 6 steps of
2 x 512 tokens on the Korean training corpus), trained ``--rounds`` times in one process, tokens/s of each round
(the first step of each left out) and the process's resident memory after it.

bench_cpt.py trains its arms one after the other in one process; if the rate falls round after round, its later
arms train fewer tokens than a fresh process would.

    python bench/bench_process_age.py MODEL_DIR [--rounds 3]   # e.g. an extended model bench_cpt.py built
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from redwhale.config.schema import TrainSection, default_stages
from redwhale.train.run import train_schedule

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with CORPUS.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(3000), handle, strict=False)]
    stage = default_stages()[2].model_dump(exclude={"share"})
    for index in range(args.rounds):
        section = TrainSection(tokens=None, sequence_length=512, micro_batch_size=2, checkpoint_every=10**6,
                               tensorboard=False, stages=[dict(stage, tokens=6 * 1024)])  # fmt: skip
        work = Path(tempfile.mkdtemp(prefix="redwhale-age-"))
        train_schedule(args.model, texts, None, section, work)
        seconds = [json.loads(x)["seconds"] for x in (work / "logs" / "metrics.jsonl").read_text().splitlines()][1:]
        rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
        print(f"round {index}: {1024 * len(seconds) / sum(seconds):.1f} tokens/s, resident {rss:,} MB", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
