package clock

import (
	"testing"
	"time"
)

func TestFakeTicker(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	tk := f.NewTicker(time.Second)
	f.Advance(500 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked before its interval")
	default:
	}
	f.Advance(500 * time.Millisecond)
	select {
	case now := <-tk.C():
		if !now.Equal(start.Add(time.Second)) {
			t.Errorf("tick at %v", now)
		}
	default:
		t.Fatal("no tick after 1s")
	}
	f.Advance(3 * time.Second) // several intervals: one pending tick, like time.Ticker
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("more than one pending tick")
	default:
	}
	tk.Stop()
	if f.Tickers() != 0 {
		t.Error("stopped ticker still registered")
	}
	f.Advance(time.Hour)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker ticked")
	default:
	}
}
