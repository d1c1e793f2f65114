package chwriter

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

func TestPartitionOfIsTheUTCDay(t *testing.T) {
	tests := []struct {
		at   time.Time
		want uint32
	}{
		{time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC), 20261124},
		{time.Date(2026, 11, 24, 23, 59, 59, 999999999, time.UTC), 20261124},
		{time.Date(2026, 11, 25, 0, 30, 0, 0, time.FixedZone("CET", 3600)), 20261124}, // 23:30 UTC
		{time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), 20240229},
	}
	for _, tt := range tests {
		got := partitionOf(uint64(tt.at.UnixNano()))
		if got != tt.want {
			t.Errorf("partitionOf(%s) = %d, want %d", tt.at, got, tt.want)
		}
		start, end := dayBounds(got)
		if s := tt.at.Unix(); s < start || s >= end || end-start != 86400 {
			t.Errorf("dayBounds(%d) = [%d, %d), does not hold %s", got, start, end, tt.at)
		}
	}
}

func TestEnumCodesMatchTheSchema(t *testing.T) {
	// The Enum8 columns number states like the kernel and families as 4/6.
	if stateCode(eventpb.TcpState_TCP_STATE_CLOSE_WAIT) != 8 || stateCode(eventpb.TcpState_TCP_STATE_NEW_SYN_RECV) != 12 || stateCode(eventpb.TcpState(99)) != 0 {
		t.Error("state codes differ from the kernel's numbering")
	}
	if familyCode(eventpb.Family_FAMILY_IPV6) != 6 || familyCode(eventpb.Family(5)) != 0 {
		t.Error("family codes differ from the schema's Enum8")
	}
}

func TestAddrCache(t *testing.T) {
	var c addrCache
	v4 := []byte{10, 1, 2, 3}
	v6 := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	for i := 0; i < 2; i++ { // second round from the cache
		if got := c.string(v4); got != "10.1.2.3" {
			t.Errorf("v4: %q", got)
		}
		if got := c.string(v6); got != "2001:db8::1" {
			t.Errorf("v6: %q", got)
		}
	}
	if got := c.string([]byte{1, 2, 3}); got != "" {
		t.Errorf("3-byte address: %q, want empty", got)
	}
	for i := 0; i < addrCacheMax+10; i++ {
		c.string([]byte{10, 0, byte(i >> 8), byte(i)})
	}
	if len(c.m) > addrCacheMax {
		t.Errorf("cache grew to %d entries, bound is %d", len(c.m), addrCacheMax)
	}
}
