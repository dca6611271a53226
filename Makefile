# switchyard: `make run` starts a sidecar with no config file, `make test`
# installs what the tests need and runs them all.
APP_ID ?= orders
APP_PORT ?= 3000

.PHONY: run build test bench deps

# grpcnotrace leaves golang.org/x/net/trace out of grpc-go (we never turn
# on grpc.EnableTracing nor serve its /debug/requests page): its templates
# made the linker keep every exported method of every type, which cost a
# third of the binary and 3.5 MiB of resident memory. The build test in
# cmd/switchyard fails when something brings that back.
BUILD_TAGS ?= grpcnotrace

run:
	go run -tags $(BUILD_TAGS) ./cmd/switchyard --app-id $(APP_ID) --app-port $(APP_PORT)

# A static binary (no libc mapped: 1.3 MiB less resident memory).
build:
	CGO_ENABLED=0 go build -trimpath -tags $(BUILD_TAGS) -o bin/switchyard ./cmd/switchyard

deps:
	bash .ci/deps.sh

test: deps
	go vet ./...
	go test -race -count=1 -timeout 30m ./...
	# Socket I/O goes through internal/rawio's raw system calls only without
	# the race detector (under it they are the syscall package's): run the
	# packages that read and write sockets through it once more without.
	go test -count=1 -timeout 10m ./internal/rawio ./internal/h2proxy ./internal/peerhttp ./listeners/... ./clusters/httpcluster ./clusters/grpcapp ./clusters/sidecar ./clusters/pubsub/...

bench:
	BENCH=1 bash .ci/deps.sh
	bash bench/run.sh
