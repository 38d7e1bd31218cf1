// libbpf (Debian's libbpf-dev) as seen by Swift (module CLibBPF): loading tapswitch's XDP
// program, attaching it to TAPs through BPF links, and reading and writing its maps.
#ifndef TAPSWITCH_CLIBBPF_H
#define TAPSWITCH_CLIBBPF_H

#include <bpf/libbpf.h>
#include <bpf/bpf.h>

#endif
