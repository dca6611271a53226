// Command grpcapp is a gRPC app for switchyard's end-to-end tests. It
// serves Dapr's AppCallback (OnInvoke echoes the data and reports the
// caller in the "x-caller" header and an "x-trailer" trailer; the method
// "fail" answers NotFound; OnTopicEvent answers SUCCESS) and grpc-go's
// interop TestService for gRPC proxying: unary and the three streaming
// kinds, echoing "x-*" metadata as headers and trailers, honouring
// ResponseStatus and, with metadata "x-sleep: <duration>", sleeping first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

type app struct {
	runtimev1pb.UnimplementedAppCallbackServer
	name string
}

func (a *app) OnInvoke(ctx context.Context, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if in.GetMethod() == "fail" {
		return nil, status.Error(codes.NotFound, "grpcapp: no such thing")
	}
	caller := ""
	if v := md.Get("dapr-caller-app-id"); len(v) > 0 {
		caller = v[0]
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-caller", caller, "x-instance", a.name, "x-method", in.GetMethod(),
		"x-verb", in.GetHttpExtension().GetVerb().String(), "x-query", in.GetHttpExtension().GetQuerystring()))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "done"))
	return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: in.GetData().GetValue()}, ContentType: in.GetContentType()}, nil
}

func (a *app) ListTopicSubscriptions(context.Context, *emptypb.Empty) (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
	return &runtimev1pb.ListTopicSubscriptionsResponse{}, nil
}

func (a *app) OnTopicEvent(context.Context, *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_SUCCESS}, nil
}

type tests struct {
	testgrpc.UnimplementedTestServiceServer
}

// echoMD sends x-* metadata back as headers and, with a "-t" suffix, trailers.
func echoMD(ctx context.Context, ss grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, "x-") {
			out[k] = v
		}
	}
	if v := md.Get("x-sleep"); len(v) > 0 {
		d, _ := time.ParseDuration(v[0])
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	trl := metadata.Pairs("x-trailer", "done")
	if ss != nil {
		if err := ss.SendHeader(out); err != nil {
			return err
		}
		ss.SetTrailer(trl)
		return nil
	}
	if err := grpc.SetHeader(ctx, out); err != nil {
		return err
	}
	return grpc.SetTrailer(ctx, trl)
}

func (tests) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := echoMD(ctx, nil); err != nil {
		return nil, err
	}
	if s := in.GetResponseStatus(); s != nil && s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (tests) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, ss testgrpc.TestService_StreamingOutputCallServer) error {
	if err := echoMD(ss.Context(), ss); err != nil {
		return err
	}
	for _, p := range in.GetResponseParameters() {
		body := make([]byte, p.GetSize())
		copy(body, in.GetPayload().GetBody())
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func (tests) StreamingInputCall(ss testgrpc.TestService_StreamingInputCallServer) error {
	if err := echoMD(ss.Context(), ss); err != nil {
		return err
	}
	total := 0
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return ss.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (tests) FullDuplexCall(ss testgrpc.TestService_FullDuplexCallServer) error {
	if err := echoMD(ss.Context(), ss); err != nil {
		return err
	}
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if s := m.GetResponseStatus(); s != nil && s.GetCode() != 0 {
			return status.Error(codes.Code(s.GetCode()), s.GetMessage())
		}
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func main() {
	port := flag.Int("port", 0, "port to listen on (127.0.0.1)")
	name := flag.String("name", "grpcapp", "instance name reported in x-instance")
	flag.Parse()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimev1pb.RegisterAppCallbackServer(srv, &app{name: *name})
	testgrpc.RegisterTestServiceServer(srv, tests{})
	fmt.Println("listening", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
