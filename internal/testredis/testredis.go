// Copyright 2026 The caddy-sse Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

// Package testredis runs a real redis-server for tests: a subprocess on a
// loopback port, with a password and no persistence, so a restart comes
// back empty. The module's tests and the end-to-end tests share it; the
// module itself never imports it.
package testredis

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server.
type Server struct {
	Addr     string // 127.0.0.1:<Port>
	Port     int
	Password string

	dir      string
	args     []string // besides the port, password and files
	sentinel []string // a sentinel's arguments (its config file): it has no password
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Start starts a redis-server for t and stops it when t ends. Without
// redis-server and redis-cli (Debian's redis-server package, which
// e2e/install-deps.sh installs), t is skipped, or fails when CI is "true".
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t)
}

// StartWith is Start with more redis-server arguments, such as
// "--cluster-enabled", "yes".
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, "", args...)
}

// start starts a redis-server with password (one of its own when "").
func start(t testing.TB, password string, args ...string) *Server {
	t.Helper()
	requireTools(t, "redis-server", "redis-cli")
	port := freePort(t)
	if password == "" {
		password = "pw-" + strconv.Itoa(port)
	}
	s := &Server{
		Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port,
		Password: password, dir: t.TempDir(), args: args,
	}
	s.Restart(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// requireTools skips t, or fails it when CI is "true", unless every tool
// is installed (Debian's redis-server and redis-sentinel packages, which
// e2e/install-deps.sh installs).
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (e2e/install-deps.sh installs it)", tool)
			}
			t.Skipf("%s is not installed (e2e/install-deps.sh installs it)", tool)
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Restart runs redis-server again after Stop, empty, on the same port,
// and waits until it answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--requirepass", s.Password, "--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)...)
	if s.sentinel != nil {
		s.cmd = exec.Command("redis-sentinel", s.sentinel...)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not answer on %s within 10s", s.Addr)
		}
		<-tick.C
	}
}

// Stop kills redis-server (SIGKILL, as a crash would) and waits for it to
// exit. Stopping a stopped server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.stopped() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused process takes SIGKILL too, but say so
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Stopped reports whether the process has exited.
func (s *Server) Stopped() bool { return s.stopped() }

// stopped reports whether the process has exited.
func (s *Server) stopped() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Pause stops redis-server with SIGSTOP: it accepts connections (the
// kernel does) and answers nothing, like a Redis stuck or far away.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// Resume lets a paused redis-server go on.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// Do runs one command with redis-cli and returns its reply, a line per
// element (an integer as its digits, an empty array as one empty line).
func (s *Server) Do(t testing.TB, args ...string) []string {
	t.Helper()
	base := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
	if s.Password != "" {
		base = append(base, "--no-auth-warning", "-a", s.Password)
	}
	cmd := exec.Command("redis-cli", append(base, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	reply := strings.TrimSpace(string(out))
	if strings.HasPrefix(reply, "ERR ") || strings.HasPrefix(reply, "WRONGTYPE ") || strings.HasPrefix(reply, "NOAUTH ") {
		t.Fatalf("redis-cli %v: %s", args, reply)
	}
	return strings.Split(reply, "\n")
}

// ZCard returns the number of members of the sorted set key.
func (s *Server) ZCard(t testing.TB, key string) int {
	t.Helper()
	n, err := strconv.Atoi(s.Do(t, "ZCARD", key)[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Now is Redis's clock.
func (s *Server) Now(t testing.TB) time.Time {
	t.Helper()
	r := s.Do(t, "TIME")
	if len(r) != 2 {
		t.Fatalf("TIME = %q", r)
	}
	sec, _ := strconv.ParseInt(r[0], 10, 64)
	us, _ := strconv.ParseInt(r[1], 10, 64)
	return time.Unix(sec, us*1000)
}
