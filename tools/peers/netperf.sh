# Sourced by tools/compare.sh and tools/perf/standing.sh.
#
# netperf_fetch DIR: sets NETPERF to DIR/netperf/usr/bin/netperf, fetching
# it there first if it is missing. Debian ships netperf in non-free only,
# so it is downloaded with apt into DIR (its own lists and cache; the
# system's sources are not touched) and unpacked without installing.
# Returns 1 (NETPERF names no program) if that fails.
netperf_fetch() {
  local dir=$1
  NETPERF=$dir/netperf/usr/bin/netperf
  [ -x "$NETPERF" ] && return 0
  (
    set -e
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm non-free" \
      > "$dir/apt/sources.list"
    o=(-o "Dir::Etc::SourceList=$PWD/$dir/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
       -o "Dir::State::Lists=$PWD/$dir/apt/lists" -o "Dir::Cache=$PWD/$dir/apt/cache")
    apt-get -qq "${o[@]}" update
    cd "$dir" && apt-get -qq "${o[@]}" download netperf 2>/dev/null
    dpkg -x netperf_*.deb netperf
  ) >/dev/null 2>&1
}
