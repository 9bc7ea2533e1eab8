package paymentoptions

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/sandbox"
)

// handlerTransport answers requests with a handler in process and keeps
// the bodies it answered.
type handlerTransport struct {
	h      http.Handler
	mu     sync.Mutex
	bodies [][]byte
}

func (t *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	req.RemoteAddr = "127.0.0.1:1234"
	t.h.ServeHTTP(rec, req)
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.bodies = append(t.bodies, body)
	t.mu.Unlock()
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.Request = req
	return res, nil
}

// sandboxAnswers returns the sandbox's answers (as sent) to a capture, a
// void, a capture over the authorised amount, a second capture, a capture
// of an unknown transaction and an unclear void, each followed by a status
// call.
func sandboxAnswers(tb testing.TB) [][]byte {
	tb.Helper()
	sb := sandbox.New(sandbox.Options{Seed: 1})
	tr := &handlerTransport{h: sb.Handler()}
	base, err := neturl.Parse("http://127.0.0.1:1")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := New(Config{BaseURL: base, HTTPClient: &http.Client{Transport: tr}, Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	run := func(op gateway.Operation, amount int64, id string) {
		req := gateway.Request{Operation: op, MerchantID: merchant, TransactionID: id, Amount: amount, Currency: "JPY"}
		c.Execute(ctx, req)
		_, _ = c.Status(ctx, req)
	}
	run(gateway.Capture, 1000, sb.Authorise(merchant, 1000, "JPY"))
	run(gateway.Void, 0, sb.Authorise(merchant, 1000, "JPY"))
	run(gateway.Capture, 1001, sb.Authorise(merchant, 1000, "JPY"))
	twice := sb.Authorise(merchant, 1000, "JPY")
	run(gateway.Capture, 400, twice)
	run(gateway.Capture, 400, twice)
	run(gateway.Capture, 1000, unknownTxn)
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})
	run(gateway.Void, 0, sb.Authorise(merchant, 1000, "JPY"))
	if len(tr.bodies) != 14 {
		tb.Fatalf("sandbox answered %d bodies, want 14", len(tr.bodies))
	}
	return tr.bodies
}

// seedAnswers returns the documentation's example answers (testdata).
func seedAnswers(tb testing.TB) [][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "seed_*_answer.json"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("seed answers: %v %v", names, err)
	}
	var bodies [][]byte
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	return bodies
}

// builtAnswers returns the answers classify's tests build.
func builtAnswers() [][]byte {
	var bodies [][]byte
	for _, rc := range []string{"0", `"0"`, `" 00 "`, "680", `""`, `"05A"`, "450", "836", "null", ""} {
		bodies = append(bodies,
			[]byte(body(true, 201, "INFO0001", rc)),
			[]byte(body(false, 400, "ERR0400", rc)),
			[]byte(body(false, 200, "Err3001", rc)))
	}
	return bodies
}

// prefilled is an answer with every field set, to decode over.
func prefilled() answer {
	var a answer
	a.Success = true
	a.TransactionType = "PRE_AUTH"
	a.GatewayResponse.Code = "INFO0000"
	a.GatewayResponse.Message = "m"
	a.PaymentDetails.Amount = flexAmount{value: 7}
	a.PaymentDetails.ResponseCode = "9"
	a.PaymentDetails.AuthCode = "a"
	a.PaymentDetails.Currency = "EUR"
	a.PaymentDetails.Scheme = "VISA"
	a.PaymentDetails.Card.Number = "411111******1111"
	a.TransactionDetails.ID = "i"
	a.TransactionDetails.Ref = "r"
	a.TransactionDetails.Timestamp = "t"
	return a
}

// checkSameAnswer fails unless decodeAnswer and gateway.DecodeAnswerCareful read
// body into the same answer, starting from start, and both fail or
// neither. It reports whether the single-pass reader read it.
func checkSameAnswer(t *testing.T, body []byte, start answer) (fast bool) {
	t.Helper()
	careful, got := start, start
	carefulErr := gateway.DecodeAnswerCareful(body, &careful)
	err := decodeAnswer(body, &got)
	if (err == nil) != (carefulErr == nil) || !reflect.DeepEqual(got, careful) {
		t.Fatalf("decodeAnswer(%q) = %+v, %v; json.Unmarshal gives %+v, %v", body, got, err, careful, carefulErr)
	}
	probe := start
	return decodeAnswerFast(body, &probe)
}

func TestDecodeAnswerReadsUsualAnswersInOnePass(t *testing.T) {
	answers := append(append(sandboxAnswers(t), seedAnswers(t)...), builtAnswers()...)
	for _, b := range answers {
		for _, start := range []answer{{}, prefilled()} {
			if !checkSameAnswer(t, b, start) {
				t.Errorf("decodeAnswer(%s) was left to json.Unmarshal", b)
			}
		}
	}
}

// oddAnswers are answers the single-pass reader must read as json.Unmarshal
// does or leave to it.
var oddAnswers = []string{
	``, " \t\r\n", "\v", `null`, `[]`, `"x"`, `1`, `{}`, ` {} `, `{} {}`, `{}x`, `{`, `}`, `{"success":true}` + "\x00",
	`{"success":true,"success":false}`,
	`{"success":null}`, `{"success":"true"}`, `{"success":1}`, `{"success":tru}`, `{"success":truex}`,
	`{"Success":true}`, `{"SUCCESS":false,"success":true}`, "{\"\u017fuccess\":true}", `{"succ\u0065ss":true}`,
	`{"gateway_response":{"code":"A"},"gateway_response":{"message":"B"}}`,
	`{"gateway_response":{"code":"A"},"gateway_response":null}`,
	`{"gateway_response":"x"}`, `{"gateway_response":[]}`, `{"gateway_response":{"Code":"x"}}`,
	`{"gateway_response":{"message":"\u00e9"}}`, `{"gateway_response":{"message":"é"}}`, "{\"gateway_response\":{\"message\":\"\xff\"}}",
	"{\"gateway_response\":{\"message\":\"\xed\xa0\x80\"}}", "{\"gateway_response\":{\"message\":\"a\tb\"}}",
	`{"payment_details":{"amount":"  12 "}}`, `{"payment_details":{"amount":1.5}}`, `{"payment_details":{"amount":1e3}}`,
	`{"payment_details":{"amount":true}}`, `{"payment_details":{"amount":[1,{"a":null}]}}`, `{"payment_details":{"amount":{}}}`,
	`{"payment_details":{"amount":-0}}`, `{"payment_details":{"amount":-12}}`, `{"payment_details":{"amount":"-"}}`,
	`{"payment_details":{"amount":99999999999999999999}}`, `{"payment_details":{"amount":999999999999999999}}`,
	`{"payment_details":{"amount":"+5"}}`, `{"payment_details":{"amount":"1_000"}}`, `{"payment_details":{"amount":"\u0031"}}`,
	`{"payment_details":{"amount":null}}`, `{"payment_details":{"amount":01}}`, `{"payment_details":{"amount":-}}`,
	`{"payment_details":{"response_code":null}}`, `{"payment_details":{"response_code":true}}`,
	`{"payment_details":{"response_code":{}}}`, `{"payment_details":{"response_code":-1.5E+3}}`,
	`{"payment_details":{"card":{"number":null}}}`, `{"payment_details":{"card":{"number":{}}}}`,
	`{"payment_details":{"card":{"number":5200000000001005}}}`, `{"payment_details":{"card":null}}`,
	`{"payment_details":{"card":{"number":"5200 0000 0000 1005"},"card":{"name":"x"}}}`,
	`{"transaction_details":{"ref":74819,"id":"x","timestamp":"2024-11-25T08:41:15.000Z"}}`,
	`{"x":"\ud800"}`, `{"x":"\u00zz"}`, `{"x":"\q"}`, `{"x":[1,2,]}`, `{"x":[,]}`, `{"x":[]}`, `{"x":{"":{}}}`,
	`{"x":{"a\"b":1}}`, "{\"x\":\"\xff\"}", "{\"x\":{\"\xff\":1}}", `{"x":1,}`, `{,"x":1}`, `{"x" 1}`,
	`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
}

func TestDecodeAnswerAgreesWithJSON(t *testing.T) {
	for _, b := range oddAnswers {
		for _, start := range []answer{{}, prefilled()} {
			checkSameAnswer(t, []byte(b), start)
		}
	}
}

// FuzzDecodeAnswer checks that decodeAnswer reads every body exactly as
// json.Unmarshal does: the same answer, from an empty one or a filled one,
// and an error for the same bodies.
func FuzzDecodeAnswer(f *testing.F) {
	for _, b := range append(append(sandboxAnswers(f), seedAnswers(f)...), builtAnswers()...) {
		f.Add(b)
	}
	for _, b := range oddAnswers {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkSameAnswer(t, body, answer{})
		checkSameAnswer(t, body, prefilled())
	})
}

func BenchmarkDecodeAnswer(b *testing.B) {
	capture := sandboxAnswers(b)[0]
	for _, bench := range []struct {
		name   string
		decode func([]byte, *answer) error
	}{
		{"careful", gateway.DecodeAnswerCareful[answer]},
		{"fast", decodeAnswer},
	} {
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(capture)))
			for b.Loop() {
				var ans answer
				if err := bench.decode(capture, &ans); err != nil || !ans.Success {
					b.Fatalf("decode = %+v, %v", ans, err)
				}
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	capture := sandboxAnswers(b)[0]
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if res := classify(gateway.Capture, http.StatusCreated, "", capture, now); res.Outcome != gateway.Succeeded {
			b.Fatalf("classify = %+v", res)
		}
	}
}
