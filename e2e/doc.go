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

// Package e2e holds end-to-end tests of the sse module against programs
// nobody here wrote: a Caddy binary built with the module, Debian's headless
// Chromium (EventSource), nginx in front of Caddy, curl over HTTP/2, a
// quic-go HTTP/3 client, a third-party Go SSE client library, and the npm
// SSE clients LLM applications use (openai, @anthropic-ai/sdk,
// @google/genai, @microsoft/fetch-event-source, eventsource,
// eventsource-parser), run by Node from clients/ against a fake upstream
// that speaks each vendor's wire format.
//
// The tools come from Debian packages; install-deps.sh installs them. The
// npm libraries are pinned in clients/package-lock.json; clients/install.sh
// installs them (npm ci), and TestClients runs it itself when
// clients/node_modules is missing or older than the lock file. When the
// environment variable CI is "true", a missing tool fails the tests;
// elsewhere those tests are skipped.
//
//	e2e/install-deps.sh
//	e2e/clients/install.sh
//	cd e2e && CI=true go test -count=1 -v .
//
// It is a Go module of its own (go.mod, with a replace to the module in the
// parent directory), so the libraries it drives are never requirements of
// the plugin.
package e2e
