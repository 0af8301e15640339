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

package check

// Decoding a compressed body read by read, so that each decoded byte keeps
// the time of the read that carried it.

import (
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
)

// decode returns the reads of a body sent with the Content-Encoding enc,
// decoded, each decoded piece stamped with the time of the read whose
// bytes completed it. It decodes gzip and deflate; for other codings it
// returns an error. A body cut short decodes as far as it goes.
func decode(enc string, reads []Read) ([]Read, error) {
	enc = strings.ToLower(strings.TrimSpace(enc))
	if enc == "" || enc == "identity" {
		return reads, nil
	}
	if len(reads) == 0 {
		return nil, nil
	}
	src := &readsReader{reads: reads}
	var zr io.Reader
	var err error
	switch enc {
	case "gzip", "x-gzip":
		zr, err = gzip.NewReader(src)
	case "deflate":
		zr, err = zlib.NewReader(src)
	default:
		return nil, fmt.Errorf("cannot decode Content-Encoding %q", enc)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %v", enc, err)
	}
	var out []Read
	buf := make([]byte, 32<<10)
	for {
		n, err := zr.Read(buf)
		if n > 0 {
			at := reads[src.last].At
			if k := len(out) - 1; k >= 0 && out[k].At == at {
				out[k].Data = append(out[k].Data, buf[:n]...)
			} else {
				out = append(out, Read{At: at, Data: append([]byte(nil), buf[:n]...)})
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("decoding %s: %v", enc, err)
		}
	}
}

// readsReader reads the bytes of reads in order, and knows which read the
// last byte it handed out came from. It is an io.ByteReader, so the
// decompressors read from it byte by byte, without reading ahead.
type readsReader struct {
	reads []Read
	i     int // the read being consumed
	off   int // offset in it
	last  int // the read of the last byte handed out
}

func (r *readsReader) ReadByte() (byte, error) {
	for r.i < len(r.reads) && r.off >= len(r.reads[r.i].Data) {
		r.i, r.off = r.i+1, 0
	}
	if r.i >= len(r.reads) {
		return 0, io.EOF
	}
	b := r.reads[r.i].Data[r.off]
	r.off++
	r.last = r.i
	return b, nil
}

func (r *readsReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}
