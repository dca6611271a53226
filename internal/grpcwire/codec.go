// Package grpcwire holds what switchyard's gRPC listeners and clusters
// share: raw message frames and the codec that carries them unparsed (gRPC
// proxying), the pump that copies a proxied stream both ways, the mapping
// between HTTP headers and gRPC metadata as daprd does it, and the mapping
// between filters.Error and gRPC statuses.
package grpcwire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Frame is one proxied gRPC message, carried without being understood.
//
// It is an empty protobuf message: decoding any message into it with the
// standard proto codec keeps every field as unknown fields, and encoding it
// writes them back byte for byte. So a server that must also serve ordinary
// proto services (the Dapr API) can receive and send frames with its default
// codec; no process-wide codec override and no ForceServerCodec is needed.
// On the client side, RawCodec skips even that parse.
type Frame = emptypb.Empty

// Bytes returns the frame's encoded message (not a copy).
func Bytes(f *Frame) []byte { return f.ProtoReflect().GetUnknown() }

// SetBytes makes b the frame's encoded message (not copied).
func SetBytes(f *Frame, b []byte) { f.ProtoReflect().SetUnknown(b) }

// RawCodec is a per-call client codec (grpc.ForceCodecV2) that passes
// Frames through as bytes and encodes anything else as proto. Its name is
// "proto", so the content-subtype on the wire stays the standard one.
var RawCodec encoding.CodecV2 = rawCodec{}

type rawCodec struct{}

var protoCodec = encoding.GetCodecV2(protoenc.Name)

func (rawCodec) Name() string { return protoenc.Name }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(Bytes(f))}, nil
	}
	if protoCodec == nil {
		return nil, fmt.Errorf("grpcwire: no proto codec registered to marshal %T", v)
	}
	return protoCodec.Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		SetBytes(f, data.Materialize())
		return nil
	}
	if protoCodec == nil {
		return fmt.Errorf("grpcwire: no proto codec registered to unmarshal %T", v)
	}
	return protoCodec.Unmarshal(data, v)
}
