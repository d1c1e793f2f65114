package counters

import (
	"reflect"
	"testing"
)

func TestMap(t *testing.T) {
	type stats struct {
		Events, SocketsCut uint64
		BadEvents          uint64
		TCPResets          uint64
		notExported        uint64
		Name               string
	}
	got := Map(&stats{Events: 1, SocketsCut: 2, BadEvents: 3, TCPResets: 4, notExported: 5})
	want := map[string]uint64{"events": 1, "sockets_cut": 2, "bad_events": 3, "tcp_resets": 4}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Map = %v, want %v", got, want)
	}
	if len(Map(3)) != 0 {
		t.Error("Map of a non-struct")
	}
}
