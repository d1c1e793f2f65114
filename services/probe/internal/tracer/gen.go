// Package tracer loads the tcpstate eBPF program, reads its ring buffer and
// decodes its records into the netpulse event contract.
package tracer

//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -type event -type conn -type listen_key -type listen_owner -type drop_key -type drop_value -target bpfel tcpstate ../../../../bpf/tcpstate.bpf.c -- -I../../../../bpf
