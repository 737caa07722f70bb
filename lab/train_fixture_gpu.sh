#!/usr/bin/env bash
# Train fixture variants side by side on one GPU, each fitted into BUDGET minutes, and pack the model folders
# into RESULTS as gzipped tar parts of at most 15 MiB, without the tokenizer folder, which every variant shares
# with the shipped fixture (reassemble: cat NAME.tgz.part-* | tar -xz; cp -r FIXTURE/tokenizer NAME/).
# The variants (same data, same seed):
#   l16  - the shipped recipe's architecture: x4 VAE, 16x16x4 latents, UNet (48,64,96,96), 2 heads
#   l32  - x2 VAE (channels 32,64): 32x32x4 latents, the same UNet
#   l32w - 32x32x4 latents, UNet (64,64,96,96) with 4 heads
# Usage, from the repository root: RESULTS=out/gpu BUDGET=6.5 DEVICE=cuda bash lab/train_fixture_gpu.sh
# VARIANTS picks some of them (e.g. VARIANTS=l32), EXTRA adds training options to each (later options win, e.g.
# EXTRA="--unet-batch 1024 --unet-lr 1e-3 --compile default" or EXTRA="--init-from carried/l32").
set -uo pipefail
RESULTS=${RESULTS:-out/gpu-fixture}
BUDGET=${BUDGET:-6.5}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/fixture-variants}
IMAGES=${IMAGES:-100000}
EXTRA=${EXTRA:-}
VARIANTS=${VARIANTS:-l16 l32 l32w}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$RESULTS" "$WORK"
PY=${PY:-python3}
declare -A variant=(
  [l16]=""
  [l32]="--vae-channels 32,64"
  [l32w]="--vae-channels 32,64 --unet-channels 64,64,96,96 --unet-heads 4"
)
for name in $VARIANTS; do
  [ -n "${variant[$name]+set}" ] || { echo "error: unknown variant $name (known: ${!variant[*]})" >&2; exit 2; }
done

$PY - <<PYEOF || exit 1
from pathlib import Path
from lab.fixture.training import TrainConfig, load_or_render
import time
t = time.time()
load_or_render(TrainConfig(num_images=$IMAGES), Path("$WORK/data.npz"), workers=16)
print(f"rendered $IMAGES images in {time.time() - t:.0f} s", flush=True)
PYEOF

common=(--device "$DEVICE" --time-budget-min "$BUDGET" --num-images "$IMAGES" --data-file "$WORK/data.npz"
        --unet-batch 256 --unet-lr 6e-4 --vae-steps 2000 --vae-batch 64 --ema-decay 0.9995
        --checkpoint-every 1000000 --threads 4 --overwrite)
[ "$DEVICE" = cuda ] && common+=(--mixed-precision bf16)
for name in $VARIANTS; do
  # shellcheck disable=SC2086
  $PY -m lab.train_fixture --out "$WORK/$name" --work "$WORK/$name.work" "${common[@]}" ${variant[$name]} $EXTRA \
    > "$WORK/$name.log" 2>&1 &
done
wait
for name in $VARIANTS; do
  echo "=== $name"; grep -v "^\[.*unet step\|Writing model\|should be kept" "$WORK/$name.log" | tail -15
  grep "unet step" "$WORK/$name.log" | awk 'NR % 20 == 1' | tail -12
  grep "unet step" "$WORK/$name.log" | tail -2
  if [ -f "$WORK/$name/model_index.json" ]; then
    tar -C "$WORK" --exclude tokenizer -czf - "$name" | split -b 15M -d - "$RESULTS/$name.tgz.part-"
  fi
done
tar -C "$WORK" -czf "$RESULTS/logs.tgz" $(cd "$WORK" && ls ./*.log)
ls -la "$RESULTS"
