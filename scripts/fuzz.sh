#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and run
# each for SECONDS (default 30): first every file of its corpus once
# (regression), then fuzzing from a copy of the corpus in the build
# directory, so nothing is written into the source tree. Exits non-zero on
# any crash, leak, timeout or out-of-memory, printing the reproducer.
# docs/fuzzing.md.
#
# usage: scripts/fuzz.sh [--no-build] [SECONDS] [TARGET...]
#   TARGET: alert matcher pattern pattern_diff json config (default: all)
#   --no-build: use the binaries already in build-fuzz/ (ctest's fuzz.* tests;
#               exits 77, "skipped", when they are missing)
# environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_ARGS (extra libFuzzer
#              flags, e.g. "-jobs=4 -workers=4")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

build=1
if [ "${1:-}" = "--no-build" ]; then
	build=0
	shift
fi
seconds=30
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
	seconds=$1
	shift
fi
all=()
for src in fuzz/fuzz_*.c; do
	t=${src#fuzz/fuzz_}
	all+=("${t%.c}")
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
	if [ ! -f "fuzz/fuzz_$t.c" ]; then
		echo "fuzz.sh: unknown target '$t' (known: ${all[*]})" >&2
		exit 2
	fi
done

dir=${FUZZ_BUILD_DIR:-build-fuzz}
case $dir in /*) ;; *) dir=$root/$dir ;; esac
if [ $build = 1 ]; then
	CC=clang CXX=clang++ bash scripts/build.sh "$dir" RelWithDebInfo -DRECOVERYD_FUZZ=ON -DRECOVERYD_TESTS=OFF >/dev/null
else
	for t in "${targets[@]}"; do
		if [ ! -x "$dir/fuzz/fuzz_$t" ]; then
			echo "fuzz.sh: $dir/fuzz/fuzz_$t is not built (run scripts/fuzz.sh or scripts/test.sh)" >&2
			exit 77
		fi
	done
fi

# libFuzzer reports leaks itself (per input, and at exit); UBSan is built
# with -fno-sanitize-recover, so any report ends the run.
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:handle_abort=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# A run that hangs outside libFuzzer's own watchdog (e.g. the leak check
# after an out-of-memory) is stopped, with everything it forked.
grace=120

# The first report in a log: an invariant with its explanation, or the
# sanitizer's / libFuzzer's error and summary lines.
show_error() {
	if grep -q "invariant failed" "$1"; then
		grep -m 1 -A 4 "invariant failed" "$1" | grep -v "^==" | sed 's/^/  /'
	else
		grep -m 3 -E "ERROR:|Lua stack overflow|SUMMARY" "$1" | sed 's/^/  /'
	fi
}

failed=()
for t in "${targets[@]}"; do
	bin=$dir/fuzz/fuzz_$t
	work=$dir/fuzz-run/$t
	rm -rf "$work"
	mkdir -p "$work/corpus" "$work/artifacts"
	cp fuzz/corpus/"$t"/* "$work/corpus/"
	# The webhook payloads of the unit and integration tests seed the
	# targets that read JSON, so new fixtures are fuzzed too.
	case $t in alert | json)
		for f in tests/fixtures/*.json; do
			b=${f##*/}
			cp "$f" "$work/corpus/fixture-${b%.json}"
		done
		;;
	esac
	opts=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/" -print_final_stats=1)
	dict=fuzz/$t.dict
	[ -f "$dict" ] || dict=fuzz/${t%_diff}.dict
	[ -f "$dict" ] && opts+=(-dict="$root/$dict")

	# 1. Regression: every corpus file once (the known findings are there).
	status=0
	timeout -k 10 $((grace + 10 * $(ls "$work/corpus" | wc -l))) \
		"$bin" "${opts[@]}" "$work/corpus"/* >"$work/regression.log" 2>&1 || status=$?
	if [ $status -ne 0 ]; then
		echo "FAIL fuzz_$t: corpus regression (exit $status)"
		repro=$(grep -E "^Running: " "$work/regression.log" | tail -1 | sed "s|^Running: ||;s|$work/corpus/|fuzz/corpus/$t/|")
		echo "  reproducer: $repro"
		show_error "$work/regression.log"
		echo "  log: $work/regression.log"
		echo "  rerun: $bin $repro"
		failed+=("$t")
		continue
	fi

	# 2. Fuzzing from the copy of the corpus.
	status=0
	# shellcheck disable=SC2086
	timeout -k 10 $((seconds + grace)) \
		"$bin" "${opts[@]}" -max_total_time="$seconds" ${FUZZ_ARGS:-} "$work/corpus" \
		>"$work/fuzz.log" 2>&1 || status=$?
	last=$(grep -E "^#[0-9]+" "$work/fuzz.log" | tail -1 || true)
	cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/p' <<<"$last")
	runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$work/fuzz.log")
	rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$work/fuzz.log")
	if [ $status -ne 0 ]; then
		echo "FAIL fuzz_$t: fuzzing (exit $status) after ${runs:-?} runs"
		for a in "$work"/artifacts/*; do
			[ -e "$a" ] && echo "  reproducer: $a"
		done
		show_error "$work/fuzz.log"
		echo "  log: $work/fuzz.log"
		echo "  rerun: $bin <reproducer>; keep it as fuzz/corpus/$t/<finding-name>"
		failed+=("$t")
		continue
	fi
	echo "ok   fuzz_$t: ${seconds}s, ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-no stats}"
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: failed: ${failed[*]}"
	exit 1
fi
