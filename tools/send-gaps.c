/*
 * A C sendmmsg(2) loop with a sender's userspace work put back in, to ask
 * what that work costs on loopback and whether its shape matters: spin
 * SPIN_NS nanoseconds after every EVERY calls (one long gap, or many
 * short ones, for the same CPU time), and send from NBUF buffers STRIDE
 * bytes apart (one hot buffer, or a pool's slots) instead of one.
 * Built and run by tools/send-gaps.sh; not part of udpring.
 *
 *   send-gaps PORT SECS VLEN LEN SEGMENT NBUF STRIDE SPIN_NS EVERY
 *
 * Sends to 127.0.0.1:PORT from a connected socket pinned to CPU 1, VLEN
 * messages of LEN bytes per call (SEGMENT > 0: each a UDP_SEGMENT train
 * of SEGMENT-byte datagrams), for SECS seconds. Prints the messages sent
 * per second; the figure that counts is what the sink received.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define MAX_VLEN 1024

static unsigned long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void spin(unsigned long long d) {
  unsigned long long end = now_ns() + d;
  while (d && now_ns() < end) {
  }
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: send-gaps PORT SECS VLEN LEN SEGMENT NBUF STRIDE SPIN_NS EVERY\n");
    return 2;
  }
  int port = atoi(argv[1]), secs = atoi(argv[2]), vlen = atoi(argv[3]);
  size_t len = strtoul(argv[4], 0, 10);
  int seg = atoi(argv[5]);
  long nbuf = atol(argv[6]);
  size_t stride = strtoul(argv[7], 0, 10);
  unsigned long long spin_ns = strtoull(argv[8], 0, 10);
  long every = atol(argv[9]);
  if (port <= 0 || port > 65535 || secs <= 0 || vlen <= 0 || vlen > MAX_VLEN || len == 0 ||
      len > 65507 || seg < 0 || nbuf <= 0 || (nbuf > 1 && stride < len) || every <= 0) {
    fprintf(stderr, "send-gaps: bad argument\n");
    return 2;
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(1, &cpus);
  if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) perror("sched_setaffinity");
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
    perror("socket/connect");
    return 1;
  }
  if (seg > 0 && setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg) != 0) {
    perror("UDP_SEGMENT");
    return 1;
  }
  size_t arena_len = stride * (nbuf - 1) + len;
  char *arena = mmap(0, arena_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (arena == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  memset(arena, 0x5a, arena_len);
  static struct iovec iov[MAX_VLEN];
  static struct mmsghdr msgs[MAX_VLEN];
  for (int i = 0; i < vlen; i++) {
    iov[i].iov_len = len;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  unsigned long long end = now_ns() + secs * 1000000000ull, sent = 0;
  long calls = 0, next = 0;
  while (now_ns() < end) {
    /* The buffers in turn, as a pool's free slots would come. */
    for (int i = 0; i < vlen; i++) {
      iov[i].iov_base = arena + stride * next;
      next = next + 1 == nbuf ? 0 : next + 1;
    }
    int r = sendmmsg(fd, msgs, vlen, 0);
    if (r > 0) sent += r;
    if (++calls % every == 0) spin(spin_ns);
  }
  printf("%llu\n", sent / secs);
  return 0;
}
