package sibs

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
// the answers' statuses and bodies.
type handlerTransport struct {
	h        http.Handler
	mu       sync.Mutex
	statuses []int
	bodies   [][]byte
}

func (t *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	req.RemoteAddr = "127.0.0.1:1234"
	t.h.ServeHTTP(rec, req)
	return t.keep(rec)
}

// keep records the answer rec holds and returns it as a response.
func (t *handlerTransport) keep(rec *httptest.ResponseRecorder) (*http.Response, error) {
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.statuses = append(t.statuses, res.StatusCode)
	t.bodies = append(t.bodies, body)
	t.mu.Unlock()
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// serve sends one request straight to the handler and keeps the answer.
func (t *handlerTransport) serve(tb testing.TB, method, path, body string) {
	tb.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:1"+path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if _, err := t.keep(rec); err != nil {
		tb.Fatal(err)
	}
}

// sandboxAnswers returns every kind of answer the in-process sandbox gives
// on its SIBS endpoints, as sent: captures and cancellations, full and
// partial, applied, declined (over the open amount, another currency,
// nothing left open) and pending; status answers with and without the
// operations list, of an authorisation and of an operation; 400, 401,
// 404, 405, 429, 500, 502, 503 and 504; and the payment the adapter never
// makes.
func sandboxAnswers(tb testing.TB) [][]byte {
	tb.Helper()
	sb := sandbox.New(sandbox.Options{Seed: 1})
	tr := &handlerTransport{h: sb.Handler()}
	c := inProcessClient(tb, tr)
	ctx := context.Background()
	orig := time.Date(2022, 5, 29, 17, 23, 36, 105_000_000, time.UTC)
	run := func(op gateway.Operation, id string, amount int64, currency, ref string, at time.Time) gateway.Result {
		req := gateway.Request{Operation: op, MerchantID: merchant, TransactionID: id, Amount: amount, Currency: currency,
			Reference: ref, OriginalTime: at}
		res := c.Execute(ctx, req)
		_, _ = c.Status(ctx, req)
		return res
	}

	auth := sb.Authorise(merchant, 10_000, "EUR")
	first := run(gateway.Capture, auth, 1999, "EUR", "cap-1", time.Time{})
	run(gateway.Capture, auth, 9000, "EUR", "cap-over", orig)
	run(gateway.Capture, auth, 100, "PLN", "cap-pln", orig)
	run(gateway.Void, auth, 1000, "EUR", "void-part", orig)
	run(gateway.Void, auth, 0, "", "void-rest", time.Time{})
	run(gateway.Capture, auth, 1, "EUR", "cap-late", orig)
	_, _ = c.Status(ctx, gateway.Request{Operation: gateway.Capture, TransactionID: first.TransactionID, Reference: "cap-1"})
	run(gateway.Capture, "nope", 100, "EUR", "cap-unknown", orig)
	run(gateway.Capture, sb.Authorise(merchant, 500, "JPY"), 500, "JPY", strings.Repeat("r", 300), orig)

	sb.SetFaults(sandbox.Faults{SIBSUnlisted: true})
	run(gateway.Void, sb.Authorise(merchant, 500, "PLN"), 0, "", "void-unlisted", time.Time{})
	sb.SetFaults(sandbox.Faults{UnclearRate: 1})
	run(gateway.Capture, sb.Authorise(merchant, 500, "PLN"), 200, "PLN", "cap-unclear", orig)
	run(gateway.Void, sb.Authorise(merchant, 500, "PLN"), 200, "PLN", "void-unclear", orig)
	sb.SetFaults(sandbox.Faults{RateLimitRate: 1, FaultStatus: true})
	run(gateway.Capture, sb.Authorise(merchant, 500, "PLN"), 200, "PLN", "cap-limited", orig)
	for _, status := range []int{500, 502, 503, 504} {
		sb.SetFaults(sandbox.Faults{ErrorRate: 1, ErrorStatus: status, FaultStatus: true})
		run(gateway.Void, sb.Authorise(merchant, 500, "PLN"), 200, "PLN", "void-fault", orig)
	}
	sb.SetFaults(sandbox.Faults{})

	locked := sandbox.New(sandbox.Options{Seed: 1, SIBSToken: token})
	ltr := &handlerTransport{h: locked.Handler()}
	inProcessClient(tb, ltr).Execute(ctx, gateway.Request{Operation: gateway.Capture, TransactionID: locked.Authorise(merchant, 500, "PLN"),
		Amount: 200, Currency: "PLN", Reference: "cap-401", OriginalTime: orig})

	tr.serve(tb, http.MethodGet, "/api/v1/payments/"+auth+"/capture", "")
	tr.serve(tb, http.MethodPost, "/api/v1/payments/"+auth+"/capture", "{")
	tr.serve(tb, http.MethodPost, "/api/v1/payments", `{"merchant":{"terminalId":24,"channel":"web","merchantTransactionId":"pay-1"},`+
		`"transaction":{"transactionTimestamp":"2022-05-29T17:23:36.105Z","description":"d","paymentType":"AUTH","amount":{"value":5,"currency":"PLN"}}}`)

	statuses := append(tr.statuses, ltr.statuses...)
	for _, want := range []int{200, 400, 401, 404, 405, 429, 500, 502, 503, 504} {
		if !containsInt(statuses, want) {
			tb.Fatalf("the sandbox answered %v, none %d", statuses, want)
		}
	}
	bodies := append(tr.bodies, ltr.bodies...)
	for _, want := range []string{`"Declined"`, `"Pending"`, `"Error"`, `"operations"`, `"CAPT"`, `"CNCL"`, `"AUTH"`, `"originalTransaction"`} {
		if !bytes.Contains(bytes.Join(bodies, nil), []byte(want)) {
			tb.Fatalf("no sandbox answer holds %s", want)
		}
	}
	return bodies
}

func containsInt(s []int, v int) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

// inProcessClient is a Client whose requests tr answers.
func inProcessClient(tb testing.TB, tr http.RoundTripper) *Client {
	tb.Helper()
	base, err := url.Parse("http://127.0.0.1:1")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := New(Config{BaseURL: base, TerminalID: terminal, HTTPClient: &http.Client{Transport: tr}, Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// seedAnswers returns the files of testdata (the documentation's
// cancellation request, seed 003, read as an answer).
func seedAnswers(tb testing.TB) [][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("testdata: %v %v", names, err)
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

// builtAnswers returns answers like those classify's and statusOf's tests
// build.
func builtAnswers() [][]byte {
	ops := `[{"transactionID":"c1","paymentType":"CAPT","paymentStatus":"Success","merchantTransactionId":"ref-1","amount":{"value":4,"currency":"PLN"}},` +
		`{"transactionID":"v1","paymentType":"CNCL","paymentStatus":"Pending","merchantTransactionId":"ref-1","amount":{"value":1}},` +
		`{"transactionID":"r1","paymentType":"RFND","paymentStatus":"Success","amount":{"value":1,"currency":"PLN"}}]`
	bodies := [][]byte{
		[]byte(statusJSON("10", ops)), []byte(statusJSON("10", "[]")), []byte(statusJSON("10", "")), []byte(statusJSON("1e400", "")),
		[]byte(`{"returnStatus":{"statusCode":0},"paymentStatus":"Success"}`),
		[]byte(`{"returnStatus":{"statusCode":"E0506","statusMsg":"Invalid amount"}}`),
	}
	for _, ps := range []string{"Success", "SUCCESS", "Declined", "Error", "Pending", "InProcessing", "Timeout", "Partial"} {
		bodies = append(bodies, []byte(answerJSON("000", ps, "CAPT", "19.99", "EUR")), []byte(answerJSON("E0001", ps, "CNCL", "1", "PLN")))
	}
	return bodies
}

// prefilled is an answer with every field but the amount and the
// operations list set, to decode over.
func prefilled() answer {
	var a answer
	a.ReturnStatus.StatusCode = "E0001"
	a.ReturnStatus.StatusMsg = "m"
	a.ReturnStatus.StatusDescription = "d"
	a.PaymentStatus = "Declined"
	a.PaymentType = "AUTH"
	a.TransactionID = "t"
	a.TransactionTimestamp = "ts"
	return a
}

// prefilledAll is prefilled with an amount and an operations list whose
// slice holds, past its length, an operation a longer array would reuse.
func prefilledAll() answer {
	a := prefilled()
	a.Amount = &money{Value: "7", Currency: "EUR"}
	ops := make([]operation, 3)
	ops[0] = operation{TransactionID: "o1", PaymentType: "CAPT", Amount: &money{Value: "1", Currency: "EUR"}}
	ops[1] = operation{TransactionID: "o2", PaymentStatus: "Success"}
	ops = ops[:1]
	a.Operations = &ops
	return a
}

// starts are the answers the tests decode over; each call gives new ones,
// so that json.Unmarshal writing into their amount and operations in
// place does not change the next start.
var starts = []func() answer{func() answer { return answer{} }, prefilled, prefilledAll}

// checkSameAnswer fails unless decodeAnswer and gateway.DecodeAnswerCareful read
// body into the same answer, starting from start(), and both fail or
// neither. It reports whether the single-pass reader read it.
func checkSameAnswer(t *testing.T, body []byte, start func() answer) (fast bool) {
	t.Helper()
	careful, got := start(), start()
	carefulErr := gateway.DecodeAnswerCareful(body, &careful)
	err := decodeAnswer(body, &got)
	if (err == nil) != (carefulErr == nil) || !reflect.DeepEqual(got, careful) {
		t.Fatalf("decodeAnswer(%q) = %s, %v; json.Unmarshal gives %s, %v", body, dump(got), err, dump(careful), carefulErr)
	}
	probe, before := start(), start()
	fast = decodeAnswerFast(body, &probe)
	if !fast && !reflect.DeepEqual(probe, before) {
		t.Fatalf("decodeAnswerFast(%q) declined but changed the answer to %s", body, dump(probe))
	}
	return fast
}

// dump shows an answer with what its pointers point to, and the
// operations list's slice up to its capacity.
func dump(a answer) string {
	type shown struct {
		answer
		Amount     *money
		Operations []operation
	}
	s := shown{answer: a, Amount: a.Amount}
	if a.Operations != nil {
		s.Operations = (*a.Operations)[:cap(*a.Operations)]
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func TestDecodeAnswerReadsUsualAnswersInOnePass(t *testing.T) {
	answers := append(append(sandboxAnswers(t), seedAnswers(t)...), builtAnswers()...)
	for _, b := range answers {
		for _, start := range starts[:2] {
			if !checkSameAnswer(t, b, start) {
				t.Errorf("decodeAnswer(%s) was left to json.Unmarshal", b)
			}
		}
		if checkSameAnswer(t, b, prefilledAll) {
			t.Errorf("decodeAnswerFast(%s) read over an amount and operations", b)
		}
	}
}

// oddAnswers are answers the single-pass reader must read as json.Unmarshal
// does or leave to it.
var oddAnswers = []string{
	``, " \t\r\n", "\v", `null`, `[]`, `"x"`, `1`, `{}`, ` {} `, `{} {}`, `{}x`, `{`, `}`, `{"paymentStatus":"x"}` + "\x00",
	`{"paymentStatus":"a","paymentStatus":"b"}`, `{"paymentStatus":null}`, `{"paymentStatus":1}`, `{"paymentStatus":true}`,
	`{"PaymentStatus":"x"}`, `{"PAYMENTSTATUS":"x","paymentStatus":"y"}`, `{"transactionId":"x"}`, "{\"payment\u017ftatus\":\"x\"}",
	`{"payment\u0053tatus":"x"}`, `{"paymentStatus":"\u0053uccess"}`, `{"paymentStatus":"é"}`, "{\"paymentStatus\":\"\xff\"}",
	"{\"paymentStatus\":\"\xed\xa0\x80\"}", "{\"paymentStatus\":\"a\tb\"}", `{"paymentStatus":"a\/b"}`,
	`{"returnStatus":{"statusCode":"000"},"returnStatus":{"statusMsg":"m"}}`, `{"returnStatus":{"statusCode":"000"},"returnStatus":null}`,
	`{"returnStatus":"x"}`, `{"returnStatus":[]}`, `{"returnStatus":{"StatusCode":"000"}}`,
	`{"returnStatus":{"statusCode":null}}`, `{"returnStatus":{"statusCode":true}}`, `{"returnStatus":{"statusCode":{}}}`,
	`{"returnStatus":{"statusCode":-1.5E+3}}`, `{"returnStatus":{"statusCode":" 000 "}}`, `{"returnStatus":{"statusCode":"\u0030"}}`,
	`{"returnStatus":{"statusCode":01}}`, `{"returnStatus":{"statusCode":-}}`, `{"returnStatus":{"statusCode":1.}}`,
	`{"amount":null}`, `{"amount":{}}`, `{"amount":{"value":1},"amount":{"currency":"EUR"}}`, `{"amount":{"value":1},"amount":null}`,
	`{"amount":{"value":1},"amount":null,"amount":{"currency":"EUR"}}`, `{"amount":"1"}`, `{"amount":[]}`, `{"amount":1}`,
	`{"amount":{"value":"19.99"}}`, `{"amount":{"value":"x"}}`, `{"amount":{"value":""}}`, `{"amount":{"value":" 1"}}`,
	`{"amount":{"value":"\u0031"}}`, `{"amount":{"value":"01"}}`, `{"amount":{"value":"-0.5e-3"}}`, `{"amount":{"value":"+1"}}`,
	`{"amount":{"value":null}}`, `{"amount":{"value":1},"amount":{"value":null}}`, `{"amount":{"value":true}}`, `{"amount":{"value":{}}}`,
	`{"amount":{"value":1e400}}`, `{"amount":{"Value":1}}`, `{"amount":{"currency":5}}`, `{"amount":{"value":1,"x":[1,{"y":null}]}}`,
	`{"operations":null}`, `{"operations":[]}`, `{"operations":[ ]}`, `{"operations":{}}`, `{"operations":"x"}`, `{"operations":[1]}`,
	`{"operations":[null]}`, `{"operations":[{}]}`, `{"operations":[{},]}`, `{"operations":[,]}`, `{"operations":[{}{}]}`,
	`{"operations":[{"transactionID":"a"},{"transactionID":"b"}],"operations":[{"paymentType":"CAPT"}]}`,
	`{"operations":[{"transactionID":"a"},{"transactionID":"b"}],"operations":[{"paymentType":"CAPT"}],"operations":[null,null]}`,
	`{"operations":[{"transactionID":"a"},{"transactionID":"b"}],"operations":[],"operations":[null,null]}`,
	`{"operations":[{"amount":{"value":1}}],"operations":[{"amount":{"currency":"EUR"}}]}`,
	`{"operations":[{"amount":{"value":1}}],"operations":[{"amount":null}]}`,
	`{"operations":[{"transactionID":"a"}],"operations":null,"operations":[null]}`,
	`{"operations":[{"transactionId":"a"}]}`, `{"operations":[{"merchantTransactionID":"a"}]}`, `{"operations":[{"amount":"1"}]}`,
	`{"operations":[{"paymentType":"CAPT","x":{"y":[]}}]}`, `{"Operations":[]}`,
	`{"x":"\ud800"}`, `{"x":"\u00zz"}`, `{"x":"\q"}`, `{"x":[1,2,]}`, `{"x":[,]}`, `{"x":[]}`, `{"x":{"":{}}}`,
	`{"x":{"a\"b":1}}`, "{\"x\":\"\xff\"}", "{\"x\":{\"\xff\":1}}", `{"x":1,}`, `{,"x":1}`, `{"x" 1}`, `{"x":tru}`, `{"x":truex}`,
	`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
}

func TestDecodeAnswerAgreesWithJSON(t *testing.T) {
	for _, b := range oddAnswers {
		for _, start := range starts {
			checkSameAnswer(t, []byte(b), start)
		}
	}
}

// FuzzDecodeAnswer checks that decodeAnswer reads every body exactly as
// json.Unmarshal does: the same answer, from an empty one or a filled
// one, and an error for the same bodies; and that decodeAnswerFast leaves
// the answer as it was when it declines.
func FuzzDecodeAnswer(f *testing.F) {
	for _, b := range append(append(sandboxAnswers(f), seedAnswers(f)...), builtAnswers()...) {
		f.Add(b)
	}
	for _, b := range oddAnswers {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, start := range starts {
			checkSameAnswer(t, body, start)
		}
	})
}

func BenchmarkDecodeAnswer(b *testing.B) {
	answers := sandboxAnswers(b)
	capture, status := answers[1], answers[2]
	if !bytes.Contains(capture, []byte(`"CAPT"`)) || !bytes.Contains(status, []byte(`"operations"`)) {
		b.Fatalf("sandbox answers moved: capture %s, status %s", capture, status)
	}
	for _, body := range []struct {
		name string
		body []byte
	}{{"capture", capture}, {"status", status}} {
		for _, bench := range []struct {
			name   string
			decode func([]byte, *answer) error
		}{
			{"careful", gateway.DecodeAnswerCareful[answer]},
			{"fast", decodeAnswer},
		} {
			b.Run(body.name+"/"+bench.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body.body)))
				for b.Loop() {
					var ans answer
					if err := bench.decode(body.body, &ans); err != nil || ans.PaymentStatus != psSuccess {
						b.Fatalf("decode = %+v, %v", ans, err)
					}
				}
			})
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	capture := sandboxAnswers(b)[1]
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if res := classify(gateway.Capture, http.StatusOK, "", capture, now); res.Outcome != gateway.Succeeded {
			b.Fatalf("classify = %+v", res)
		}
	}
}

func BenchmarkStatusOf(b *testing.B) {
	status := sandboxAnswers(b)[2]
	req := gateway.Request{Operation: gateway.Capture, TransactionID: "x", Reference: "cap-1"}
	b.ReportAllocs()
	for b.Loop() {
		if st, err := statusOf(req, http.StatusOK, status); err != nil || st.Ours != gateway.OursApplied {
			b.Fatalf("statusOf = %+v, %v", st, err)
		}
	}
}
