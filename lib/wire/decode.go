package wire

import (
	"fmt"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Reasons a batch is refused: short and fixed, to count and log once.
const (
	ReasonUndecodable   = "undecodable batch"
	ReasonSchemaVersion = "unknown schema version"
	ReasonHostMismatch  = "host does not match subject"
)

// Rejection says why a message cannot be used.
type Rejection struct {
	Reason string // one of the Reason constants
	Err    error  // what exactly
	text   string
}

// Error is the whole story, as a dead letter's HeaderReason holds it.
func (r *Rejection) Error() string { return r.text }

// DecodeBatch fills b from data, a message that came on the subject of
// host, and checks what every reader needs: the schema version this code
// knows and the host of the subject (a batch may leave its host empty).
// reader names who reads, in the details. Strings in b are copies.
func DecodeBatch(b *eventpb.Batch, data []byte, host, reader string) *Rejection {
	return checkBatch(b, b.UnmarshalVT(data), host, reader)
}

// DecodeBatchUnsafe is DecodeBatch with the strings in b aliasing data:
// faster, valid for as long as data is.
func DecodeBatchUnsafe(b *eventpb.Batch, data []byte, host, reader string) *Rejection {
	return checkBatch(b, b.UnmarshalVTUnsafe(data), host, reader)
}

func checkBatch(b *eventpb.Batch, err error, host, reader string) *Rejection {
	if err != nil {
		return &Rejection{Reason: ReasonUndecodable, Err: err, text: ReasonUndecodable + ": " + err.Error()}
	}
	var reason string
	switch {
	case b.SchemaVersion != eventpb.SchemaVersion:
		reason, err = ReasonSchemaVersion, fmt.Errorf("schema_version %d, this %s reads %d", b.SchemaVersion, reader, eventpb.SchemaVersion)
	case b.Host != "" && b.Host != host:
		reason, err = ReasonHostMismatch, fmt.Errorf("batch of host %q on the subject of host %q", b.Host, host)
	default:
		return nil
	}
	return &Rejection{Reason: reason, Err: err, text: err.Error()}
}
