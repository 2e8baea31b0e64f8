#!/usr/bin/env bash
# The newest dependencies that pyproject.toml's bounds allow, tested: installs them in a
# throw-away virtual environment (without constraints.txt, as a fresh `pip install`
# resolves them), shows how they differ from constraints.txt, then runs the type checker
# and the test suite there. Run it before raising a bound. With --update, a passing run
# rewrites constraints.txt with the versions it tested.
#
#   bash scripts/newest_deps.sh [--update] [PYTEST ARGUMENTS...]
set -euo pipefail
cd "$(dirname "$0")/.."
update=0
if [[ "${1:-}" == "--update" ]]; then
    update=1
    shift
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
python="$scratch/venv/bin/python"
"$python" -m pip install -q -e '.[test]'
"$python" -m pip freeze --all --exclude-editable | grep -v '^pip==' > "$scratch/tested.txt"
echo "versions installed (>) against constraints.txt (<):"
diff <(grep -v '^#' constraints.txt | sort -f) <(sort -f "$scratch/tested.txt") || true
"$scratch/venv/bin/mypy"
"$python" -m pytest -q -p no:cacheprovider "$@"
if ((update)); then
    {
        sed -n '/^#/p' constraints.txt
        cat "$scratch/tested.txt"
    } > "$scratch/constraints.txt"
    mv "$scratch/constraints.txt" constraints.txt
    echo "constraints.txt: the versions just tested"
fi
