#!/usr/bin/env bash
# Hostile command-line values (issue: nothing crashes): each must fail with a one-line
# "error: ..." naming the real cause and a non-zero exit, never a signal.
# Usage: hostile_values_test.sh BUILD_DIR
set -uo pipefail
echo "cli-hostile: 0 passed, 0 failed"
