// Package retry runs an operation until it succeeds, fails for good or its
// context ends, waiting between attempts with jittered exponential back-off
// (github.com/cenkalti/backoff/v5). Every netpulse loop that waits out a
// server that went away retries through it, so they all back off alike and
// never stop on their own.
package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff bounds the waits between attempts: each wait is drawn from ½ to
// 1½ times a value that starts at First and doubles, so that many clients
// of one server that came back do not retry in step; no wait is longer
// than Max.
type Backoff struct {
	First time.Duration
	Max   time.Duration
}

// Default waits about 250 ms at first, at most 5 s.
var Default = Backoff{First: 250 * time.Millisecond, Max: 5 * time.Second}

// spread is how far a wait strays from its value (backoff's randomization).
const spread = 0.5

// AttemptTimeout bounds one attempt of Logged.
const AttemptTimeout = 10 * time.Second

// Notify is told of each failed attempt (1 is the first) before the wait.
type Notify func(attempt int, err error, wait time.Duration)

// Permanent marks err as not worth retrying: Do returns it at once.
func Permanent(err error) error { return backoff.Permanent(err) }

// Do calls op until it succeeds, returns a Permanent error (returned
// unwrapped) or ctx ends (ctx's error, with the last failure in its text).
func Do[T any](ctx context.Context, b Backoff, op func() (T, error), notify Notify) (T, error) {
	exp := backoff.NewExponentialBackOff()
	exp.RandomizationFactor = spread
	exp.InitialInterval = min(b.First, time.Duration(float64(b.Max)/(1+spread)))
	exp.MaxInterval = time.Duration(float64(b.Max) / (1 + spread)) // so a spread wait stays within Max
	exp.Multiplier = 2
	attempt := 0
	var last error
	v, err := backoff.Retry(ctx, func() (T, error) {
		v, err := op()
		if err != nil {
			last = err // also the attempt that ctx's end cut short
		}
		return v, err
	},
		backoff.WithBackOff(exp),
		backoff.WithMaxElapsedTime(0), // until ctx ends
		backoff.WithNotify(func(err error, wait time.Duration) {
			attempt++
			if notify != nil {
				notify(attempt, err, wait)
			}
		}))
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Cause(ctx)) {
		// backoff returns the context's cause; the caller asked for ctx.Err().
		err = ctx.Err()
		if last != nil {
			err = fmt.Errorf("%w (last error: %v)", err, last)
		}
	}
	return v, err
}

// Logged calls fn with a context bounded by AttemptTimeout until it
// succeeds, fails for good or ctx ends, backing off as Default and logging
// each failure as a warning about what. Its errors start with what.
func Logged[T any](ctx context.Context, log *slog.Logger, what string, fn func(context.Context) (T, error)) (T, error) {
	v, err := Do(ctx, Default, func() (T, error) {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		defer cancel()
		return fn(actx)
	}, func(_ int, err error, wait time.Duration) {
		log.Warn("retrying", "what", what, "err", err, "in", wait.Round(time.Millisecond))
	})
	if err != nil {
		return v, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}
