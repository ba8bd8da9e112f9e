#!/usr/bin/env bash
# The GPU arm of bench/bench_cpt.py (issue 13: the three arms at 10^7 training tokens each on SmolLM2 in bf16) on a
# lent GPU machine that reaches no network and takes at most 64 MiB of files a call. What it lacks travels in two
# calls, made one right after the other (the machine stays warm ~30 s between calls):
#
#   here:            bash bench/device_cpt.sh pack     # .gpu/one (wheels, prepared corpus, the model's first half)
#                                                      # .gpu/two (its second half); .gpu/ is git-ignored locally
#   device call 1:   carry [".gpu/one"], command: bash bench/device_cpt.sh setup
#   device call 2:   carry [".gpu/two"], command: bash bench/device_cpt.sh run      (timeout_s 600)
#
# The base model is the demo's SmolLM2-135M-Instruct GGUF (94 MiB: two parts, checked by sha256 once joined); the
# wheels are the project's dependencies the machine's image lacks or holds too old (transformers); redwhale itself
# runs from src/. `run` writes each arm's row as the arm ends (bench_cpt.py's --record) and stops itself before the
# call's limit, so a call cut short loses no finished arm: `run` again continues (--resume). The JSON and the log come
# back in $OUT; keep the JSON as bench/measured/cpt-gpu.json.
#
# Environment: BENCH_OUT (pack: the bench_cpt.py --out whose prepared corpus to reuse, else it is prepared),
# TOKENS (run: training tokens per arm, default 10^7), LIMIT (run: seconds before it stops itself, default 540; keep
# it under the call's timeout_s and the device time left: an arm cut off is trained again from its start on `run`),
# SEQ_LEN and MICRO_BATCH (run: the batch geometry of every arm, default 1,024 x 16 = 16,384 tokens a step),
# SKIP_WHEELS=1 (setup: use this Python's packages; for a rehearsal on a machine that has them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python  # here: the project's environment
WORK=${WORK:-/tmp/rw-gpu}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
# our dependencies the image lacks or may hold in another version (transformers: it holds 5.17, we need >= 5.20;
# peft: the version tested here). datatrove's wheel travels without its 18 MB URL blacklist (its URL filter, which
# the bench never runs); datasets and lm-eval stay behind (the corpus travels prepared; the bench scores no benchmark)
WHEELS="transformers pydantic pydantic_core annotated-types typing-inspection gguf orjson ftfy wcwidth torch-optimi
        datatrove loguru dill multiprocess peft typing_extensions"
STRIP_WHEEL='import sys, zipfile
src, dst, drop = sys.argv[1], sys.argv[2], b"assets/url_filter"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        data = zin.read(item)
        if drop.decode() in item.filename:
            continue
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"\n".join(line for line in data.split(b"\n") if drop not in line)
        zout.writestr(item, data)'

pack() {
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")" && { grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"; }
    rm -rf .gpu && mkdir -p .gpu/one/whl .gpu/one/bench .gpu/two
    local specs=()
    for name in $WHEELS; do specs+=("$name==$($PY -c "import importlib.metadata as m; print(m.version('$name'))")"); done
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/one/whl "${specs[@]}"
    local datatrove
    datatrove=$(ls .gpu/one/whl/datatrove-*.whl)
    $PY -c "$STRIP_WHEEL" "$datatrove" "$datatrove.stripped" && mv "$datatrove.stripped" "$datatrove"
    local bench_out=${BENCH_OUT:-/tmp/redwhale-bench-cpt}
    $PY -c "import sys; from pathlib import Path; sys.path.insert(0, 'bench'); from bench_cpt import prepared_corpus
prepared_corpus(Path('$bench_out'))"
    mkdir -p .gpu/one/bench/prepare && cp -r "$bench_out/prepare/output" .gpu/one/bench/prepare/
    cp "$bench_out/prepared.json" .gpu/one/bench/
    local model
    model=$($PY -c "from redwhale.core.source import resolve; print(resolve('smollm2-135m').path)")
    local first=$((35 * 1024 * 1024))  # wheels and corpus (~23 MiB) travel with the smaller part
    head -c "$first" "$model" > .gpu/one/model.00
    tail -c +$((first + 1)) "$model" > .gpu/two/model.01
    (cd "$(dirname "$model")" && sha256sum "$GGUF") > .gpu/two/model.sha256
    du -sh .gpu/one .gpu/two
    for part in one two; do
        if [ "$(du -sm .gpu/$part | cut -f1)" -gt 60 ]; then echo ".gpu/$part is over 60 MiB: it will not travel" >&2; exit 1; fi
    done
}

setup() {
    test -d .gpu/one || { echo "no .gpu/one: carry it (pack it here first)" >&2; exit 2; }
    rm -rf "$WORK/site" && mkdir -p "$WORK"  # a record of finished arms (a machine still warm) is kept
    if [ "${SKIP_WHEELS:-0}" != 1 ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .gpu/one/whl/*.whl
    fi
    cp .gpu/one/model.00 "$WORK/" && mkdir -p "$WORK/bench" && cp -r .gpu/one/bench/. "$WORK/bench/"
    PYTHONPATH="$WORK/site:$PWD/src" $PY -c "import torch, transformers, pydantic, gguf, peft, datatrove, optimi
import redwhale.recipe.phases, redwhale.train.run, redwhale.corpus.readers, redwhale.evaluate.run
print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    echo "setup done: now, at once, carry .gpu/two and run 'bash bench/device_cpt.sh run'"
}

run() {
    test -f "$WORK/model.00" || { echo "setup's files are gone (the machine was given back): setup again" >&2; exit 3; }
    test -f .gpu/two/model.01 || { echo "no .gpu/two: carry it" >&2; exit 2; }
    cat "$WORK/model.00" .gpu/two/model.01 > "$WORK/$GGUF"
    (cd "$WORK" && sha256sum -c -) < .gpu/two/model.sha256
    # the record is written (atomically, as each arm ends) straight into $OUT, so that a call the device cuts off
    # still brings back every finished arm; $OUT is emptied before each call, so $WORK keeps a copy to resume from
    local out=${OUT:-$WORK/out} resume=()
    mkdir -p "$out"
    if [ -f "$WORK/cpt-gpu.json" ]; then cp "$WORK/cpt-gpu.json" "$out/" && resume=(--resume); fi
    set +e
    PYTHONPATH="$WORK/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 timeout -k 15 "${LIMIT:-540}" \
        $PY bench/bench_cpt.py --tokens "${TOKENS:-10000000}" --sequence-length "${SEQ_LEN:-1024}" --micro-batch "${MICRO_BATCH:-16}" \
        --base "$WORK/$GGUF" --out "$WORK/bench" --record "$out/cpt-gpu.json" ${resume[@]+"${resume[@]}"} 2>&1 | tee "$out/log.txt"
    local rc=${PIPESTATUS[0]}
    set -e
    if [ -f "$out/cpt-gpu.json" ]; then cp "$out/cpt-gpu.json" "$WORK/"; fi
    if [ "$rc" = 124 ]; then echo "stopped at LIMIT=${LIMIT:-540} s: run again (the machine warm) to continue"; fi
    exit "$rc"
}

case "${1:-}" in
    pack | setup | run) "$1" ;;
    *) echo "usage: bash bench/device_cpt.sh pack|setup|run" >&2; exit 2 ;;
esac
