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
