// Package eventpb holds the generated code of the raw-event contract
// (event.proto). `make generate` rebuilds it with the protoc plugins pinned
// as tools in lib/go.mod.
package eventpb

// SchemaVersion is the value of Batch.schema_version this code writes and reads.
const SchemaVersion = 1
