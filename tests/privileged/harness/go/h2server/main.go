// A TLS server that speaks HTTP/2 (and HTTP/1.1) the way Go's net/http does, answering
// POST /v1/chat/completions like OpenAI: a JSON completion, or with "stream": true an SSE
// stream flushed chunk by chunk. The answer names the request (sha1 of its body, as the
// Python fake APIs do). Each request is printed as one JSON line (proto, path, body).
//
// Usage: h2server -addr IP:PORT -cert CERT -key KEY
package main

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
)

var printMu sync.Mutex

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	certFile := flag.String("cert", "", "certificate (PEM)")
	keyFile := flag.String("key", "", "key (PEM)")
	flag.Parse()
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	server := &http.Server{
		Handler:   http.HandlerFunc(chat),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
	}
	fmt.Println(`{"listening":true}`)
	log.Fatal(server.ServeTLS(listener, "", ""))
}

func chat(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	digest := sha1.Sum(body)
	answer := fmt.Sprintf("Fake answer %s from the test server.", hex.EncodeToString(digest[:])[:12])
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	json.Unmarshal(body, &req)
	printMu.Lock()
	line, _ := json.Marshal(map[string]any{"proto": r.Proto, "path": r.URL.Path, "host": r.Host,
		"body": string(body), "answer": answer})
	fmt.Println(string(line))
	printMu.Unlock()
	chunk := func(delta map[string]string, finish any) []byte {
		out, _ := json.Marshal(map[string]any{"id": "chatcmpl-test", "object": "chat.completion.chunk",
			"created": 1700000000, "model": req.Model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}})
		return out
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		out, _ := json.Marshal(map[string]any{"id": "chatcmpl-test", "object": "chat.completion",
			"created": 1700000000, "model": req.Model,
			"choices": []map[string]any{{"index": 0, "finish_reason": "stop",
				"message": map[string]string{"role": "assistant", "content": answer}}},
			"usage": map[string]int{"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}})
		w.Write(out)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	for _, data := range [][]byte{
		chunk(map[string]string{"role": "assistant", "content": ""}, nil),
		chunk(map[string]string{"content": "Sure"}, nil),
		chunk(map[string]string{"content": ". "}, nil),
		chunk(map[string]string{"content": answer}, nil),
		chunk(map[string]string{}, "stop"),
		[]byte("[DONE]"),
	} {
		fmt.Fprintf(w, "data: %s\n\n", data)
		flusher.Flush()
	}
}
