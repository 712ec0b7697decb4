#!/bin/bash
# Runs every configuration of a file (default configs.txt) `reps` times (default 2), 4,000 connections each.
# Lines: label|server cfg json|server node flags|server env json|client cfg json (the last three optional).
# usage: bench/tools/h2-memory/batch.sh [file] [reps]
here=$(dirname "$0"); f=${1:-$here/configs.txt}; reps=${2:-2}
while IFS='|' read -r label cfg nargs renv ccfg; do
  [ -z "$label" ] && continue
  for r in $(seq "$reps"); do
    RUN_ENV="${renv:-{\}}" H2CLIENT="${ccfg:-{\}}" timeout 120 node "$here/run.mjs" "$label" "$cfg" 4000 $nargs
  done
done < "$f"
