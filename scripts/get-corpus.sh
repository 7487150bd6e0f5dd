#!/usr/bin/env bash
# Writes the default corpus, the King James Bible (public domain, Debian package bible-kjv),
# to $1/kjv.txt (default data/corpus): about 4.3 MB of English, one verse per line, with
# chapter headings and verse numbers removed. Installs bible-kjv when missing.
set -euo pipefail
out=${1:-data/corpus}
mkdir -p "$out"
if [ -s "$out/kjv.txt" ]; then echo "get-corpus: $out/kjv.txt already present"; exit 0; fi
if ! command -v bible >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bible-kjv
fi
# `bible` wraps verses over several lines; join them back to one verse per line.
bible 'Gen1:1-Rev22:21' 2>/dev/null | awk '
  /^[A-Za-z0-9 ]+ [0-9]+$/ && !/^  / { next }            # chapter headings ("Genesis 1")
  /^  *[0-9]+ / { if (verse != "") print verse; sub(/^  *[0-9]+ /, ""); verse = $0; next }
  /^$/ { next }
  { verse = verse " " $0 }
  END { if (verse != "") print verse }' > "$out/kjv.txt.tmp"
mv "$out/kjv.txt.tmp" "$out/kjv.txt"
echo "get-corpus: wrote $out/kjv.txt ($(wc -c < "$out/kjv.txt") bytes, $(wc -l < "$out/kjv.txt") verses)"
