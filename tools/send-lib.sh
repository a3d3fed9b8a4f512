# Sourced by tools/send-ab.sh and tools/send-states.sh.
#
# ref_args_of LOAD ARGS...: sets the array ref_args to what the C
# reference sender (`udpring reference send`) takes of a load's
# arguments: -s/--size and --gso with their values, so that it sends the
# same datagrams and trains.
ref_args_of() {
  ref_args=()
  local a=("$@") i
  for ((i = 0; i < ${#a[@]}; i++)); do
    case "${a[i]}" in
      -s|--size|--gso) ref_args+=("${a[i]}" "${a[i+1]}"); i=$((i + 1)) ;;
    esac
  done
}

# steal_ticks: the steal time CPU 1 (the senders' CPU) has had since boot,
# in clock ticks (/proc/stat, the cpu1 line's eighth value): on a shared
# host another guest's work shows here, and a round that had much of it
# says less.
steal_ticks() {
  awk '$1 == "cpu1" { print $9 }' /proc/stat
}
