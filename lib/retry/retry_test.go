package retry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

var quick = Backoff{First: time.Millisecond, Max: 4 * time.Millisecond}

func TestDoRetriesUntilSuccess(t *testing.T) {
	calls, notified := 0, 0
	v, err := Do(context.Background(), quick, func() (int, error) {
		calls++
		if calls < 4 {
			return 0, errors.New("not yet")
		}
		return 42, nil
	}, func(attempt int, err error, wait time.Duration) {
		notified++
		if attempt != notified || wait <= 0 || wait > quick.Max {
			t.Errorf("notify(%d, %v, %s) after %d notifications", attempt, err, wait, notified-1)
		}
	})
	if v != 42 || err != nil || calls != 4 || notified != 3 {
		t.Fatalf("Do = %d, %v after %d calls, %d notifications; want 42, nil, 4, 3", v, err, calls, notified)
	}
}

func TestDoStopsOnPermanent(t *testing.T) {
	bad := errors.New("misconfigured")
	calls := 0
	_, err := Do(context.Background(), quick, func() (struct{}, error) {
		calls++
		return struct{}{}, Permanent(bad)
	}, nil)
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("Do = %v after %d calls; want %v after 1", err, calls, bad)
	}
}

// A server that never comes back: Do goes on past backoff's default
// 15-minute limit (not testable in real time, so: until ctx ends) and says
// why it stopped and what failed last.
func TestDoEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := Do(ctx, quick, func() (int, error) {
		calls++
		if calls == 20 {
			cancel()
		}
		return 0, errors.New("connection refused")
	}, nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "connection refused") || calls != 20 {
		t.Fatalf("Do = %v after %d calls; want context.Canceled naming the last error after 20", err, calls)
	}
}

func TestLoggedBoundsAttemptsAndNamesWhat(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err := Logged(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "create stream X", func(actx context.Context) (int, error) {
		calls++
		if _, ok := actx.Deadline(); !ok {
			t.Error("attempt context has no deadline")
		}
		return 0, Permanent(errors.New("name in use"))
	})
	if err == nil || err.Error() != "create stream X: name in use" || calls != 1 {
		t.Fatalf("Logged = %v after %d calls", err, calls)
	}
}

// Under a context cancelled with a cause (an errgroup's sibling failed), Do
// still says context.Canceled, with the last failure.
func TestDoEndsWithContextCause(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sibling := errors.New("the other loop failed")
	calls := 0
	_, err := Do(ctx, quick, func() (int, error) {
		if calls++; calls == 3 {
			cancel(sibling)
		}
		return 0, errors.New("ClickHouse unreachable")
	}, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, sibling) || !strings.Contains(err.Error(), "ClickHouse unreachable") {
		t.Fatalf("Do = %v; want context.Canceled naming the last error", err)
	}
}
