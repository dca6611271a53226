// Command startprobe measures how long a server takes from process start to
// its first ready answer. It is used by bench/startup.sh.
//
//	startprobe [-n 20] [-url http://127.0.0.1:3500/v1.0/healthz] [-status 204] \
//	    [-interval 200us] [-timeout 15s] [-log FILE] -- COMMAND [ARGS...]
//
// For each of -n runs it starts COMMAND (in its own process group), then polls
// -url every -interval with a fresh TCP connection and a minimal HTTP/1.1 GET
// until the answer's status is -status. It records, from just before the
// process is started:
//
//	listen  the first accepted TCP connection to the URL's host:port
//	ready   the first answer with -status
//
// and then ends the process group with SIGTERM and records
//
//	exit    the time from SIGTERM until the process has exited
//
// Each run prints one line (times in microseconds, VmRSS of the started
// process at ready in KiB); the last lines are min/median/p90/max per
// measure, in milliseconds:
//
//	run 1: listen_us=8123 ready_us=9876 exit_us=3012 rss_ready_kb=15320
//	ready ms: min 9.21 median 9.88 p90 11.02 max 12.40 (n=20)
//
// The port must be free before each run; the probe waits up to -timeout for
// that. It exits non-zero when a run fails (process exited, timeout).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type result struct {
	listen, ready, exit time.Duration
	rssKB               int
}

func main() {
	n := flag.Int("n", 20, "number of starts")
	rawURL := flag.String("url", "http://127.0.0.1:3500/v1.0/healthz", "readiness URL (plain HTTP)")
	status := flag.Int("status", 204, "status code that means ready")
	interval := flag.Duration("interval", 200*time.Microsecond, "pause between polls")
	timeout := flag.Duration("timeout", 15*time.Second, "give up on a run (or on a busy port) after this long")
	stopTimeout := flag.Duration("stop-timeout", 10*time.Second, "SIGKILL the process group if SIGTERM has not ended it by then")
	gap := flag.Duration("gap", 200*time.Millisecond, "pause between runs")
	logPath := flag.String("log", "", "append the command's stdout and stderr to this file (default: discard)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: startprobe [flags] -- COMMAND [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	argv := flag.Args()
	if len(argv) == 0 || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fatalf("bad -url %q: want http://host:port/path", *rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: startprobe\r\nConnection: close\r\n\r\n")

	var logf *os.File
	if *logPath != "" {
		if logf, err = os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			fatalf("%v", err)
		}
		defer logf.Close()
	}

	var results []result
	for i := 1; i <= *n; i++ {
		if err := waitPortFree(addr, *timeout); err != nil {
			fatalf("run %d: %v", i, err)
		}
		r, err := once(argv, logf, addr, req, *status, *interval, *timeout, *stopTimeout)
		if err != nil {
			fatalf("run %d: %v", i, err)
		}
		fmt.Printf("run %d: listen_us=%d ready_us=%d exit_us=%d rss_ready_kb=%d\n",
			i, r.listen.Microseconds(), r.ready.Microseconds(), r.exit.Microseconds(), r.rssKB)
		results = append(results, r)
		time.Sleep(*gap)
	}
	pick := map[string]func(result) time.Duration{
		"listen": func(r result) time.Duration { return r.listen },
		"ready":  func(r result) time.Duration { return r.ready },
		"exit":   func(r result) time.Duration { return r.exit },
	}
	for _, name := range []string{"listen", "ready", "exit"} {
		d := make([]time.Duration, len(results))
		for i, r := range results {
			d[i] = pick[name](r)
		}
		sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
		fmt.Printf("%s ms: min %.2f median %.2f p90 %.2f max %.2f (n=%d)\n",
			name, ms(d[0]), ms(median(d)), ms(quantile(d, 0.9)), ms(d[len(d)-1]), len(d))
	}
}

// once starts the command, polls until ready, stops it.
func once(argv []string, logf *os.File, addr string, req []byte, want int, interval, timeout, stopTimeout time.Duration) (result, error) {
	var r result
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if logf != nil {
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	exited := make(chan error, 1)

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	go func() { exited <- cmd.Wait() }()
	stop := func() time.Duration {
		ts := time.Now()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		return time.Since(ts)
	}

	deadline := t0.Add(timeout)
	var last string
	for {
		select {
		case err := <-exited:
			return r, fmt.Errorf("%s exited before it was ready after %v (%v); last poll: %s", argv[0], time.Since(t0).Round(time.Millisecond), err, last)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return r, fmt.Errorf("not ready within %v; last poll: %s", timeout, last)
		}
		code, connected, err := poll(addr, req)
		now := time.Since(t0)
		if connected && r.listen == 0 {
			r.listen = now
		}
		if err == nil && code == want {
			r.ready = now
			break
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "status " + strconv.Itoa(code)
		}
		time.Sleep(interval)
	}
	r.rssKB = vmRSS(cmd.Process.Pid)
	r.exit = stop()
	return r, nil
}

// poll makes one GET on a fresh connection and returns the status code.
func poll(addr string, req []byte) (code int, connected bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return 0, false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, true, err
	}
	line, err := bufio.NewReaderSize(c, 256).ReadString('\n')
	if err != nil {
		return 0, true, err
	}
	// "HTTP/1.1 204 No Content"
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, true, fmt.Errorf("bad status line %q", line)
	}
	code, err = strconv.Atoi(f[1])
	return code, true, err
}

func waitPortFree(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return nil // refused: nobody listens
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still in use after %v", addr, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func vmRSS(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

func median(d []time.Duration) time.Duration {
	n := len(d)
	if n%2 == 1 {
		return d[n/2]
	}
	return (d[n/2-1] + d[n/2]) / 2
}

// quantile uses the nearest-rank method on sorted d.
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(d))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "startprobe: "+format+"\n", a...)
	os.Exit(1)
}
