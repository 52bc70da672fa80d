#!/usr/bin/env bash
# Train and score the paper's rows on the CPU (issue 16), resumably: rerun it and every run continues
# from its last checkpoint; finished runs and existing evaluations are skipped.
#
#   bash tools/paper_rows.sh ablations   # LIIF stage 1, then Tables 4/5: p in {0.6, 0, 0.2, 0.4, 0.8}, w/o ASE, w/o FI
#   bash tools/paper_rows.sh metasr      # Table 1/2 row: Meta-SR stage 1, then Algorithm 1
#   bash tools/paper_rows.sh srno        # Table 1/2/3 row: SRNO stage 1, then Algorithm 1
#   bash tools/paper_rows.sh metasr-long # Meta-SR (paper mode), 3x stage 2 with the x1.1-1.7 group drawn 2:1:1:1
#   bash tools/paper_rows.sh seeds       # liif-p0.6 again with seeds 12 and 13: Table 4/5's noise floor
#   bash tools/paper_rows.sh scan ROW    # PSNR at all 30 scales x1.1-x4.0 at the group width (Fig. 4)
#   bash tools/paper_rows.sh full ROW    # x2/x3/x4 at full width only (for a stage-1 run)
#   bash tools/paper_rows.sh ship ROW    # copy a finished row and its evaluations into weights/rows/
#
# Runs land in runs/paper-cpu/<row>/ (model.safetensors, train.log, eval-234/, eval-scan/).
set -euo pipefail
cd "$(dirname "$0")/.."
anysr=${ANYSR:-.venv/bin/anysr}
root=runs/paper-cpu
sets=(../shared/datasets/Set5 ../shared/datasets/Set14)
threads=${THREADS:-1}

train() {  # train ROW CONFIG [--set k=v ...]
    local row=$1 config=$2
    shift 2
    mkdir -p "$root/$row"
    "$anysr" train --config "$config" --set "run_dir=$root/$row" --set "threads=$threads" --quiet "$@" \
        >>"$root/$row/train.log" 2>&1
}

score() {  # score ROW: x2/x3/x4 at the scale group's width (†) and full width (‡), beside bicubic
    local row=$1
    [ -f "$root/$row/eval-234/eval.json" ] && return 0
    "$anysr" eval --weights "$root/$row/model.safetensors" --data "${sets[@]}" --scales 2,3,4 \
        --widths auto,1.0 --compute-dtype bf16 --threads "$threads" --quiet --out-dir "$root/$row/eval-234" \
        >>"$root/$row/eval.log" 2>&1
}

score_full() {  # score_full ROW [WEIGHTS]: x2/x3/x4 at full width only (a stage-1 model: the vanilla method)
    local row=$1 weights=${2:-$root/$1/model.safetensors}
    [ -f "$root/$row/eval-234/eval.json" ] && return 0
    mkdir -p "$root/$row"
    "$anysr" eval --weights "$weights" --data "${sets[@]}" --scales 2,3,4 --widths 1.0 --compute-dtype bf16 \
        --threads "$threads" --quiet --out-dir "$root/$row/eval-234" >>"$root/$row/eval.log" 2>&1
}

scan() {  # scan ROW: all 30 scales (Fig. 4) at the scale group's width (†), the served output
    local row=$1
    [ -f "$root/$row/eval-scan/eval.json" ] && return 0
    "$anysr" eval --weights "$root/$row/model.safetensors" --data "${sets[@]}" --scales 1.1:4.0:0.1 \
        --widths auto --compute-dtype bf16 --threads "$threads" --quiet --out-dir "$root/$row/eval-scan" \
        >>"$root/$row/eval.log" 2>&1
}

ship() {  # ship ROW: evaluations, training log and config; weights for deliverable rows only
    local row=$1 out=weights/rows
    mkdir -p "$out/eval/$row"
    # Stage-1 files and seed repeats: only their scores are cited, the files are reproducible.
    case "$row" in *-stage1 | *-seed*) ;; *) cp "$root/$row/model.safetensors" "$out/$row.safetensors" ;; esac
    cp "$root/$row/eval-234/eval.json" "$out/eval/$row/x234.json"
    cp "$root/$row/eval-234/eval.md" "$out/eval/$row/x234.md"
    if [ -f "$root/$row/eval-scan/eval.json" ]; then
        cp "$root/$row/eval-scan/eval.json" "$out/eval/$row/scan.json"
        cp "$root/$row/eval-scan/eval.md" "$out/eval/$row/scan.md"
    fi
    cp "$root/$row/train.log" "$out/eval/$row/train.log"
    cp "$root/$row/config.json" "$out/eval/$row/train-config.json"
}

stage2=configs/train/paper-cpu/stage2.yaml
stage1=configs/train/paper-cpu/stage1.yaml
case "${1:-}" in
ablations)
    train liif-stage1 "$stage1" --set model.decoder.name=liif --set init_parts=all
    score_full liif-stage1
    for p in 0.6 0 0.2 0.4 0.8; do
        train "liif-p$p" "$stage2" --set "reset_p=$p"
        score "liif-p$p"
    done
    train liif-no-ase "$stage2" --set model.encoder.args.ase=false
    score liif-no-ase
    train liif-no-fi "$stage2" --set model.encoder.args.interweave=false
    score liif-no-fi
    ;;
metasr | srno)
    # Meta-SR has no skip path: its fresh decoder starts far from any image (L1 0.42 against SRNO's 0.04,
    # whose bilinear skip starts it near bilinear) and read 32.1 dB on Set5 x2 after 300 steps, below
    # bicubic, with the loss still falling fast. It gets 3,000 stage-1 steps (0.17 s each); stage 2 is the
    # same 800 steps for every row.
    stage1_steps=300
    [ "$1" = metasr ] && stage1_steps=3000
    train "$1-stage1" "$stage1" --set "model.decoder.name=$1" --set "steps=$stage1_steps"
    score_full "$1-stage1"
    train "$1" "$stage2" --set "init_from=$root/$1-stage1/model.safetensors" --set "model.decoder.name=$1"
    score "$1"
    ;;
metasr-long)
    # The equal-budget paper-mode Meta-SR misses bicubic at x1.1 on Set5: its w = 0.5 subnet had 80
    # steps. Same start, 3x the stage-2 steps, the x1.1-1.7 group drawn twice as often as each other.
    train metasr-long "$stage2" --set "init_from=$root/metasr-stage1/model.safetensors" \
        --set model.decoder.name=metasr --set model.decoder.args.slim=false \
        --set 'group_weights=[2,1,1,1]' --set steps=2400
    score metasr-long
    scan metasr-long
    ;;
seeds)
    for seed in 12 13; do
        train "liif-p0.6-seed$seed" "$stage2" --set "seed=$seed"
        score "liif-p0.6-seed$seed"
    done
    ;;
full)
    score_full "$2"
    ;;
scan)
    scan "$2"
    ;;
ship)
    ship "$2"
    ;;
*)
    echo "usage: $0 ablations | metasr | srno | metasr-long | seeds | full ROW | scan ROW | ship ROW" >&2
    exit 2
    ;;
esac
