#!/usr/bin/env python3
"""The layering check: every #include "dir/..." in SRC must point to its own layer or a
lower one. The order below is the one place it is written (docs/architecture.md explains
it); layers on one rank (train and infer; serve and dist) must not include each other.

    python3 tools/check_layers.py [SRC]      # SRC defaults to src/; exit 1 on a violation
"""
import pathlib
import re
import sys

LAYERS = [["core"], ["io"], ["kernels"], ["moe"], ["model"], ["data"], ["train", "infer"], ["study"],
          ["serve", "dist"], ["api"], ["cli"]]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/')


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    if not root.is_dir():
        print(f"check_layers: {root} is not a folder")
        return 2
    bad, files = [], 0
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".h", ".cpp") or not path.is_file():
            continue
        files += 1
        layer = path.relative_to(root).parts[0]
        if layer not in RANK:
            bad.append(f"{path.relative_to(root)}: folder {layer} has no place in the layer order")
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m or m.group(1) not in RANK or m.group(1) == layer:
                continue
            target = m.group(1)
            if RANK[target] >= RANK[layer]:
                kind = "a higher" if RANK[target] > RANK[layer] else "a same-rank"
                bad.append(f"{path.relative_to(root)}:{number}: {layer} includes {target} ({kind} layer): {line.strip()}")
    for b in bad:
        print(b)
    order = " < ".join(", ".join(names) for names in LAYERS)
    print(f"check_layers: {files} files, {len(bad)} violation(s) of {order}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
