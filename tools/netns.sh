#!/usr/bin/env bash
# Test topologies in network namespaces (needs root and iproute2).
#
#   tools/netns.sh pmtu-up NAME     host A - router R - host B
#   tools/netns.sh blackhole NAME   R drops the ICMP errors it would send
#   tools/netns.sh lan-up NAME      hosts h1 h2 h3 on one bridge (and h1, h3 on a second)
#   tools/netns.sh xdp-up NAME      hosts A and B on one veth pair (XDP_QUEUES queues, default 1)
#   tools/netns.sh down NAME        removes every NAME-* namespace
#
# xdp-up builds NAME-a and NAME-b joined by a veth pair with one receive
# and one transmit queue per end, checksum offload, UDP segmentation and
# VLAN offloads off on both (frames carry full checksums, are cut before the
# veth and keep their tags, as on a wire; see the xdp backend):
#
#   A x0 10.202.0.1/24 fd00:202::1/64  ---  B x1 10.202.0.2/24 fd00:202::2/64
#
# lan-up builds NAME-sw (two bridges, IGMP snooping off: every host sees
# all multicast, the hosts' own memberships filter) and hosts NAME-h1..h3:
#
#   br0: h1 e0 10.201.0.1/24 fd00:201::1/64, h2 e0 .2 ::2, h3 e0 .3 ::3
#   br1: h1 e1 10.201.1.1/24 fd00:201:1::1/64, h3 e1 .3 ::3
#
# Each host routes 224.0.0.0/4 out of e0.
#
# pmtu-up builds three namespaces NAME-a, NAME-r, NAME-b:
#
#   A a0 10.200.1.1/24  fd00:200:1::1/64
#        |
#   R r0 10.200.1.254   fd00:200:1::fe      (forwarding on)
#     r1 10.200.2.254   fd00:200:2::fe      link MTU 1400; IPv4 route to B: MTU 1280
#        |
#   B b0 10.200.2.1/24  fd00:200:2::1/64    link MTU 1400
#
# so the path MTU from A to B is 1280 for IPv4 (R's route) and 1400 for
# IPv6 (the link). These addresses exist only inside the namespaces; all
# traffic stays there. IPv6 addresses are added with nodad so they are
# usable at once.
set -euo pipefail

cmd=${1:-}
n=${2:-}
[ -n "$cmd" ] && [ -n "$n" ] || { echo "usage: $0 pmtu-up|lan-up|xdp-up|blackhole|down NAME" >&2; exit 2; }

nsip() { local ns=$1; shift; ip -n "$n-$ns" "$@"; }
sysctl_in() { ip netns exec "$n-$1" sysctl -qw "$2"; }

case "$cmd" in
pmtu-up)
  for ns in a r b; do
    ip netns add "$n-$ns"
    nsip "$ns" link set lo up
  done
  ip -n "$n-a" link add a0 type veth peer name r0 netns "$n-r"
  ip -n "$n-b" link add b0 type veth peer name r1 netns "$n-r"
  nsip a addr add 10.200.1.1/24 dev a0
  nsip a addr add fd00:200:1::1/64 dev a0 nodad
  nsip r addr add 10.200.1.254/24 dev r0
  nsip r addr add fd00:200:1::fe/64 dev r0 nodad
  nsip r addr add 10.200.2.254/24 dev r1
  nsip r addr add fd00:200:2::fe/64 dev r1 nodad
  nsip b addr add 10.200.2.1/24 dev b0
  nsip b addr add fd00:200:2::1/64 dev b0 nodad
  nsip r link set r1 mtu 1400
  nsip b link set b0 mtu 1400
  for l in "a a0" "r r0" "r r1" "b b0"; do
    set -- $l
    nsip "$1" link set "$2" up
  done
  sysctl_in r net.ipv4.ip_forward=1
  sysctl_in r net.ipv6.conf.all.forwarding=1
  # IPv4 towards B leaves R through a 1280-byte route.
  nsip r route replace 10.200.2.0/24 dev r1 mtu 1280
  nsip a route add default via 10.200.1.254
  nsip a -6 route add default via fd00:200:1::fe
  nsip b route add default via 10.200.2.254
  nsip b -6 route add default via fd00:200:2::fe
  # Wait until A reaches B both ways (neighbour discovery).
  for _ in $(seq 1 50); do
    if ip netns exec "$n-a" ping -c1 -W1 -q 10.200.2.1 >/dev/null 2>&1 &&
       ip netns exec "$n-a" ping -6 -c1 -W1 -q fd00:200:2::1 >/dev/null 2>&1; then
      exit 0
    fi
    sleep 0.1
  done
  echo "$0: topology $n is up but A cannot reach B" >&2
  exit 1
  ;;
lan-up)
  ip netns add "$n-sw"
  ip -n "$n-sw" link set lo up
  for br in br0 br1; do
    ip -n "$n-sw" link add "$br" type bridge mcast_snooping 0
    ip -n "$n-sw" link set "$br" up
  done
  for h in 1 2 3; do
    ip netns add "$n-h$h"
    ip -n "$n-h$h" link set lo up
    ip -n "$n-h$h" link add e0 type veth peer name "p${h}0" netns "$n-sw"
    ip -n "$n-sw" link set "p${h}0" master br0 up
    ip -n "$n-h$h" addr add "10.201.0.$h/24" dev e0
    ip -n "$n-h$h" addr add "fd00:201::$h/64" dev e0 nodad
    ip -n "$n-h$h" link set e0 up
    ip -n "$n-h$h" route add 224.0.0.0/4 dev e0
  done
  for h in 1 3; do
    ip -n "$n-h$h" link add e1 type veth peer name "p${h}1" netns "$n-sw"
    ip -n "$n-sw" link set "p${h}1" master br1 up
    ip -n "$n-h$h" addr add "10.201.1.$h/24" dev e1
    ip -n "$n-h$h" addr add "fd00:201:1::$h/64" dev e1 nodad
    ip -n "$n-h$h" link set e1 up
  done
  for _ in $(seq 1 50); do
    if ip netns exec "$n-h1" ping -c1 -W1 -q 10.201.0.3 >/dev/null 2>&1 &&
       ip netns exec "$n-h1" ping -6 -c1 -W1 -q fd00:201::3 >/dev/null 2>&1; then
      exit 0
    fi
    sleep 0.1
  done
  echo "$0: lan $n is up but h1 cannot reach h3" >&2
  exit 1
  ;;
xdp-up)
  for ns in a b; do ip netns add "$n-$ns"; done
  q=${XDP_QUEUES:-1}
  ip link add "$n-x0" numtxqueues "$q" numrxqueues "$q" type veth peer name "$n-x1" numtxqueues "$q" numrxqueues "$q"
  ip link set "$n-x0" netns "$n-a" name x0
  ip link set "$n-x1" netns "$n-b" name x1
  nsip a addr add 10.202.0.1/24 dev x0
  nsip a addr add fd00:202::1/64 dev x0 nodad
  nsip b addr add 10.202.0.2/24 dev x1
  nsip b addr add fd00:202::2/64 dev x1 nodad
  for ns in a b; do
    nsip "$ns" link set lo up
  done
  nsip a link set x0 up
  nsip b link set x1 up
  if command -v ethtool >/dev/null; then
    for end in a:x0 b:x1; do
      ip netns exec "$n-${end%%:*}" ethtool -K "${end#*:}" tx-checksum-ip-generic off \
        tx-udp-segmentation off rxvlan off txvlan off >/dev/null
    done
  else
    echo "xdp-up: ethtool not found: checksum offload stays on (frames carry partial checksums)" >&2
  fi
  ;;
blackhole)
  # R stops sending "fragmentation needed" and "packet too big": a path
  # that drops the ICMP errors PMTU discovery relies on. Forwarded packets
  # that are too big are still dropped; nothing tells the sender.
  ip netns exec "$n-r" iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
  ip netns exec "$n-r" ip6tables -A OUTPUT -p icmpv6 --icmpv6-type packet-too-big -j DROP
  ;;
down)
  for ns in a r b sw h1 h2 h3; do
    ip netns del "$n-$ns" 2>/dev/null || true
  done
  ;;
*)
  echo "usage: $0 pmtu-up|lan-up|xdp-up|blackhole|down NAME" >&2
  exit 2
  ;;
esac
