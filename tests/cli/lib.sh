# Shared by the CLI shell tests: a scratch folder removed on exit, pass/fail counters, and
# the two checks. Source it after setting `moepp`.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() {  # check NAME COMMAND...: the command must succeed
  if "${@:2}" >"$tmp/out" 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; cat "$tmp/out"; fi
}
# check_error NAME NEEDLE COMMAND...: must exit non-zero without a signal, and the last line
# of stderr (progress lines may come before it) must be the only "error: " line and contain
# NEEDLE (a grep basic regular expression).
check_error() {
  "${@:3}" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -eq 0 ]; then
    fail=$((fail + 1)); echo "FAIL: $1 (succeeded)"
  elif [ $rc -ge 128 ]; then
    fail=$((fail + 1)); echo "FAIL: $1 (killed by signal $((rc - 128)))"; tail -3 "$tmp/err"
  elif [ "$(grep -c '^error: ' "$tmp/err")" -eq 1 ] && tail -n 1 "$tmp/err" | grep -q "^error: .*$2"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1)); echo "FAIL: $1: expected one line 'error: ...$2', got (rc $rc):"; cat "$tmp/err"
  fi
}
