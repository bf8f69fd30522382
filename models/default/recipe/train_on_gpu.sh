#!/bin/bash
# How models/default was made: on one GPU machine, from the Python installed there.
#   bash models/default/recipe/train_on_gpu.sh            (from the repository root)
# Collects the running Python's standard library and site-packages (minus the packages the
# model card's evaluation holds out), prepares them with the shipped tokenizer, and trains
# `mini` until BUDGET seconds after the start. The checkpoint lands in $W/run/best; $OUT, if
# set, receives a copy split into 15 MB parts (the size a file may have to travel back).
# REPO_CONTEXT=0.5 writes half the files as repository-level examples (snippets of their own
# package in front, as the engine's prompt puts them), the retrain the README's "Repository
# context" section asks for; the shipped model was made with 0. Prepare uses every core.
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-555}; DEVICE=${DEVICE:-cuda}; BATCH=${BATCH:-128}; LR=${LR:-2e-3}; W=${W:-runs/default-gpu}
REPO_CONTEXT=${REPO_CONTEXT:-0}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=true
PY=${PY:-python3}
rm -rf $W; mkdir -p $W
nvidia-smi -L 2>/dev/null; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"
$PY models/default/recipe/build_corpus.py $W/corpus $W/packages.json || exit 1
echo "[t=$(( $(date +%s) - T0 ))s] corpus built"
$PY -m codecomplete.train.cli prepare $W/corpus --tokenizer models/default/tokenizer.json --out $W/data --split-by file \
  --repo-context $REPO_CONTEXT || exit 1
echo "[t=$(( $(date +%s) - T0 ))s] prepared"
LEFT=$(( T0 + BUDGET - $(date +%s) ))
[ $LEFT -lt 60 ] && LEFT=60  # the data took longer than planned: still train for a minute
MIN=$($PY -c "print(round(($LEFT - 20) / 60, 2))")
echo "[t=$(( $(date +%s) - T0 ))s] training for $MIN minutes"
timeout --signal=TERM $(( LEFT + 20 )) $PY -m codecomplete.train.cli train $W/data --out $W/run --preset mini --device $DEVICE \
  --batch-size $BATCH --lr $LR --warmup-steps 200 --eval-every 1000 --log-every 50 --minutes $MIN
echo "[t=$(( $(date +%s) - T0 ))s] trained (rc $?)"
if [ -n "${OUT:-}" ]; then
  split -b 15M -d $W/run/best/model.safetensors $OUT/model.safetensors.part
  cp $W/run/best/config.json $OUT/
  tar czf $OUT/info.tgz -C $W packages.json data/meta.json run/metrics.jsonl run/train_config.json
fi
