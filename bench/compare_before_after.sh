#!/bin/bash
# Before/after with alternating binaries: OLD=<old build>/bench [NEW=build/bench] bash bench/compare_before_after.sh
OLD=${OLD:?set OLD to the old build/bench folder} NEW=${NEW:-build/bench}
for r in 1 2 3; do
  for which in old new; do
    B=$OLD; [ $which = new ] && B=$NEW
    echo "=== round $r $which train_bench"
    $B/train_bench --steps 8 --torch 0 2>&1 | tail -4
    echo "=== round $r $which decode_bench"
    $B/decode_bench --dtype f32,q8_0 --prompt 256 --decode 32 2>&1 | tail -6
    echo "=== round $r $which moe_layer_bench"
    $B/moe_layer_bench --tokens 1024 --torch 0 --repeats 3 --z 0.5 2>&1 | grep -vE "^\s*$" | tail -12
  done
done
echo ALLDONE
