#!/usr/bin/env bash
# Runs one test tier: only the tests in *_test.go files carrying the build
# tag TAG (integration, e2e, cluster), package by package, so a tier does
# not run the unit tests of its packages again. A -run pattern per package
# keeps a unit test out even when it shares a package with the tier's.
# Usage: hack/tier.sh TAG [go test flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: hack/tier.sh TAG [go test flags...]}
shift
declare -A runs
while IFS= read -r f; do
	head -1 "$f" | grep -Eq "^//go:build (.*[^!a-z_])?${tag}([^a-z_].*)?$" || continue
	names=$(sed -n 's/^func \(Test[A-Za-z0-9_]*\)(t \*testing\.T).*/\1/p' "$f" | paste -sd'|')
	[[ -n $names ]] || continue
	d=./$(dirname "$f")
	runs[$d]="${runs[$d]:+${runs[$d]}|}$names"
done < <(git ls-files --cached --others --exclude-standard -- '*_test.go')
((${#runs[@]} > 0)) || { echo "tier.sh: no test file tagged $tag" >&2; exit 1; }
failed=()
for d in $(printf '%s\n' "${!runs[@]}" | sort); do
	go test -tags "$tag" -count=1 -run "^(${runs[$d]})\$" "$@" "$d" || failed+=("$d")
done
if ((${#failed[@]} > 0)); then
	echo "tier $tag failed in: ${failed[*]}" >&2
	exit 1
fi
