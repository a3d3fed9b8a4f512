# Sourced by tools/dns-compare.sh and tools/perf/standing.sh.
#
# nsd_start DIR PORT CPU: starts NSD on 127.0.0.1:PORT, pinned to CPU,
# answering for example.com from DIR with response-rate limiting off
# (`rrl-ratelimit: 0`: its default answers part of a flood with TC set
# and drops part, which measures RRL, not the load tool). Writes DIR/q.txt,
# a query file in dnsperf's format that udpring's --dns-queries reads too
# (answers, an NXDOMAIN, an NS). Sets NSD to the server's pid; its output
# goes to DIR/nsd.log.
nsd_start() {
  local d=$1 port=$2 cpu=$3
  cat >"$d/example.com.zone" <<'ZONE'
$ORIGIN example.com.
$TTL 300
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 127.0.0.1
www IN A 192.0.2.1
mail IN A 192.0.2.2
ZONE
  cat >"$d/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$port
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$d"
  database: ""
  pidfile: "$d/nsd.pid"
  xfrdfile: "$d/xfrd.state"
  xfrdir: "$d"
  zonelistfile: "$d/zone.list"
  logfile: "$d/nsd.log"
  server-count: 1
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: example.com
  zonefile: example.com.zone
CONF
  printf 'www.example.com A\nmail.example.com A\nnope.example.com A\nexample.com NS\n' >"$d/q.txt"
  taskset -c "$cpu" nsd -d -c "$d/nsd.conf" >>"$d/nsd.log" 2>&1 &
  NSD=$!
  sleep 1
}
