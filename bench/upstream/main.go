// Command upstream is the two-core phase's chat completions upstream: OpenAI's
// /v1/chat/completions wire format (plain and streamed), after a fixed latency, at a small
// fraction of the Python sandbox's CPU per call.
//
// Why it exists: in the two-core phase the gateway, the load generator and the upstream
// share the machine's two cores. The sandbox (Python) spent 0.12-0.15 ms of CPU a call, about
// 0.4 of the two cores at aig's two-core peak, where a real provider takes none of the
// gateway's cores. This stands in for the provider there; every other phase keeps the
// sandbox, whose latency is kept to the microsecond (services/sandbox/timer.py) where this
// one's sleeps follow Go's timers (about a millisecond of spread, which a peak in calls a
// second does not see).
//
// Its answer has the sandbox's shape and size: a ~100-token answer, usage with the prompt
// counted at four bytes a token, the same headers. bench/test_compiled_upstream.py drives it with
// the official OpenAI SDK.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type settings struct {
	latency       time.Duration
	chunkInterval time.Duration
	streamChunks  int
	answerTokens  int
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type chatRequest struct {
	Model         string    `json:"model"`
	Messages      []message `json:"messages"`
	Stream        bool      `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type usage struct {
	PromptTokens            int            `json:"prompt_tokens"`
	CompletionTokens        int            `json:"completion_tokens"`
	TotalTokens             int            `json:"total_tokens"`
	PromptTokensDetails     map[string]int `json:"prompt_tokens_details"`
	CompletionTokensDetails map[string]int `json:"completion_tokens_details"`
}

// words the answer is made of.
var words = strings.Fields("deterministic latency edge token gateway function budget upstream " +
	"schema router ledger vector simulated sandbox chunk content result event argument " +
	"request provider usage credit")

// answer is about four bytes a token long, as the sandbox's answers are (~400 bytes for
// 100 tokens), so a gateway parses and forwards the same amount either way.
func answer(tokens int) string {
	var b strings.Builder
	b.WriteString("Upstream answer.")
	for i := 0; b.Len() < 4*tokens; i++ {
		b.WriteByte(' ')
		b.WriteString(words[(i*7+3)%len(words)])
	}
	b.WriteByte('.')
	return b.String()
}

// promptTokens counts a prompt at four bytes a token (the sandbox runs a tokenizer; a
// peak in calls a second does not depend on the count).
func promptTokens(messages []message) int {
	size := 0
	for _, m := range messages {
		var text string
		if json.Unmarshal(m.Content, &text) == nil {
			size += len(text)
			continue
		}
		var parts []struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, p := range parts {
				size += len(p.Text)
			}
		}
	}
	return (size + 3) / 4
}

func newID(prefix string) string {
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	return prefix + hex.EncodeToString(raw[:])
}

func writeError(w http.ResponseWriter, status int, kind, code, text string) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"error": map[string]any{
		"message": text, "type": kind, "param": nil, "code": code,
	}}
	_ = json.NewEncoder(w).Encode(body)
}

type server struct {
	settings   settings
	answer     string
	answerJSON []byte // the answer as a JSON string
}

func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", "use POST")
		return
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	time.Sleep(s.settings.latency)
	if !strings.HasPrefix(r.Header.Get("authorization"), "Bearer ") {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"You didn't provide an API key. You need to provide your API key in an "+
				"Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
		return
	}
	var request chatRequest
	if err := json.Unmarshal(raw, &request); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"request body is not valid JSON: "+err.Error())
		return
	}
	if request.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"you must provide a model parameter")
		return
	}
	prompt := promptTokens(request.Messages)
	used := usage{
		PromptTokens:            prompt,
		CompletionTokens:        s.settings.answerTokens,
		TotalTokens:             prompt + s.settings.answerTokens,
		PromptTokensDetails:     map[string]int{"cached_tokens": 0},
		CompletionTokensDetails: map[string]int{"reasoning_tokens": 0},
	}
	id := newID("chatcmpl-")
	created := time.Now().Unix()
	w.Header().Set("x-request-id", newID("req_"))
	if request.Stream {
		includeUsage := request.StreamOptions != nil && request.StreamOptions.IncludeUsage
		s.stream(w, id, created, request.Model, used, includeUsage)
		return
	}
	body := s.completion(id, created, request.Model, used)
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// completion is the plain answer's body. Built by appending to one buffer: it is the
// only thing this upstream does at a two-core peak, and encoding/json over maps cost
// several microseconds a call more.
func (s *server) completion(id string, created int64, model string, used usage) []byte {
	usageJSON, _ := json.Marshal(used)
	body := make([]byte, 0, 384+len(s.answerJSON)+len(model))
	body = append(body, `{"id":"`...)
	body = append(body, id...)
	body = append(body, `","object":"chat.completion","created":`...)
	body = strconv.AppendInt(body, created, 10)
	body = append(body, `,"model":`...)
	modelJSON, _ := json.Marshal(model) // JSON's escapes, not Go's (strconv.Quote)
	body = append(body, modelJSON...)
	body = append(body, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	body = append(body, s.answerJSON...)
	body = append(body, `,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	body = append(body, usageJSON...)
	body = append(body, `,"system_fingerprint":"fp_upstream"}`...)
	return body
}

func (s *server) stream(w http.ResponseWriter, id string, created int64, model string, used usage, includeUsage bool) {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("content-type", "text/event-stream")
	w.Header().Set("cache-control", "no-cache")
	w.WriteHeader(http.StatusOK)
	chunk := func(delta map[string]any, finish any) []byte {
		event, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"system_fingerprint": "fp_upstream",
			"choices": []any{map[string]any{
				"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish,
			}},
			"usage": nil,
		})
		return event
	}
	send := func(event []byte) bool {
		var frame bytes.Buffer
		frame.WriteString("data: ")
		frame.Write(event)
		frame.WriteString("\n\n")
		if _, err := w.Write(frame.Bytes()); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send(chunk(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil)) {
		return
	}
	pieces := max(s.settings.streamChunks, 1)
	// Paced as the sandbox paces its streams: every content chunk and the finish chunk an
	// interval after the one before; the usage chunk and [DONE] follow the finish at once.
	for i := 0; i < pieces; i++ {
		time.Sleep(s.settings.chunkInterval)
		start, end := i*len(s.answer)/pieces, (i+1)*len(s.answer)/pieces
		if !send(chunk(map[string]any{"content": s.answer[start:end]}, nil)) {
			return
		}
	}
	time.Sleep(s.settings.chunkInterval)
	if !send(chunk(map[string]any{}, "stop")) {
		return
	}
	if includeUsage {
		event, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"system_fingerprint": "fp_upstream", "choices": []any{}, "usage": used,
		})
		if !send(event) {
			return
		}
	}
	send([]byte("[DONE]"))
}

func main() {
	address := flag.String("addr", "127.0.0.1:0", "where to listen (port 0: any free port)")
	latency := flag.Int("latency-ms", 20, "milliseconds before the first byte of an answer")
	interval := flag.Int("chunk-interval-ms", 5, "milliseconds between streamed chunks")
	chunks := flag.Int("stream-chunks", 20, "content chunks in a streamed answer")
	tokens := flag.Int("answer-tokens", 100, "completion tokens in an answer")
	flag.Parse()
	s := &server{
		settings: settings{
			latency:       time.Duration(*latency) * time.Millisecond,
			chunkInterval: time.Duration(*interval) * time.Millisecond,
			streamChunks:  *chunks,
			answerTokens:  *tokens,
		},
		answer: answer(*tokens),
	}
	s.answerJSON, _ = json.Marshal(s.answer)
	mux := http.NewServeMux()
	mux.HandleFunc("/openai/v1/chat/completions", s.chatCompletions)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	listener, err := net.Listen("tcp", *address)
	if err != nil {
		log.Fatal(err)
	}
	// The harness reads the address from this line (port 0 picks a free one).
	fmt.Printf("listening on %s\n", listener.Addr())
	log.Fatal(http.Serve(listener, mux))
}
