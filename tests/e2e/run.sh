#!/usr/bin/env bash
# End-to-end: the official `openai` npm client (version pinned in package-lock.json,
# installed here from the npm registry with `npm ci`) against `moepp serve`. Exits 77
# (skipped) when Node/npm are missing, the registry cannot be reached, or moepp was built
# without the server - never "passed" without having run.
# Usage: run.sh MOEPP_BINARY WORK_DIR
set -uo pipefail
moepp="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "SKIP: node/npm not installed"; exit 77; }
"$moepp" serve --help >/dev/null 2>&1 || { echo "SKIP: moepp has no serve command"; exit 77; }
if "$moepp" serve -m /nonexistent 2>&1 | grep -q "without cpp-httplib"; then echo "SKIP: moepp built without cpp-httplib"; exit 77; fi
rm -rf "$work" && mkdir -p "$work/client"
cp "$here/package.json" "$here/package-lock.json" "$here/openai_client_test.mjs" "$work/client/"
if ! (cd "$work/client" && timeout 300 npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
  echo "SKIP: npm ci could not install the pinned client (registry unreachable?):"; tail -5 "$work/client/npm.log"; exit 77
fi

# A tiny trained model whose context is widened to 1024 (the weights do not depend on it).
for i in $(seq 1 400); do echo "Line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done >"$work/corpus.txt"
"$moepp" prepare --input "$work/corpus.txt" --out "$work/data" --vocab-size 300 >/dev/null 2>&1 || exit 1
"$moepp" train --data "$work/data" --out "$work/tiny" --preset tiny --steps 30 --batch 4 --seq 32 --eval-batches 1 >/dev/null 2>&1 || exit 1
sed -i 's/"max_position_embeddings": [0-9]*/"max_position_embeddings": 1024/' "$(readlink -f "$work/tiny/config.json")"

# What the library gives: moepp generate --temp 0 on each prompt (and each chat rendered
# with the plain template, as the server renders it: "User: ...\n\nAssistant:").
expect() {  # expect PROMPT N -> the continuation (generate prints the prompt as decoded, the
            # continuation and a newline; -n 0 prints the decoded prompt alone)
  local out shown
  out=$("$moepp" generate -m "$work/tiny" -p "$1" -n "$2" --temp 0 -q; printf x); out=${out%x}; out=${out%$'\n'}
  shown=$("$moepp" generate -m "$work/tiny" -p "$1" -n 0 -q; printf x); shown=${shown%x}; shown=${shown%$'\n'}
  printf '%s' "${out#"$shown"}"
}
{
  printf '{"model": "tiny", "completions": ['
  for i in $(seq 0 15); do
    p="Line $((i * 3 + 1)): the quick"; n=$((8 + i))
    [ "$i" -gt 0 ] && printf ','
    printf '{"prompt": %s, "max_tokens": %d, "continuation": %s}' "$(printf '%s' "$p" | node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0,"utf8")))')" "$n" \
      "$(expect "$p" "$n" | node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0,"utf8")))')"
  done
  printf '], "chats": ['
  for i in $(seq 0 15); do
    u="Line $((i * 5 + 2)): the"; n=$((6 + i))
    [ "$i" -gt 0 ] && printf ','
    printf '{"user": %s, "max_tokens": %d, "continuation": %s}' "$(printf '%s' "$u" | node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0,"utf8")))')" "$n" \
      "$(expect "User: $u"$'\n\n'"Assistant:" "$n" | node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(0,"utf8")))')"
  done
  printf ']}\n'
} >"$work/expected.json"

"$moepp" serve -m "$work/tiny" --port 0 --api-key e2e-key --max-seqs 32 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -nE 's/.*on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' "$work/serve.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start:"; cat "$work/serve.log"; exit 1; }
(cd "$work/client" && node openai_client_test.mjs "http://127.0.0.1:$port/v1" e2e-key "$work/expected.json")
status=$?
kill -TERM $server; wait $server; rc=$?
[ $rc -eq 0 ] || { echo "FAIL: the server exited $rc after SIGTERM"; status=1; }
exit $status
