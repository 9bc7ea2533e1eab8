package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
)

// DecodeAnswer reads body, a gateway's JSON answer, into ans exactly as
// DecodeAnswerCareful does (the same answer, an error or not): the usual
// answers in one pass by fast, any other by DecodeAnswerCareful. fast
// reports whether it read body, and leaves ans unchanged when it did not.
func DecodeAnswer[T any](body []byte, ans *T, fast func([]byte, *T) bool) error {
	if fast(body, ans) {
		return nil
	}
	return DecodeAnswerCareful(body, ans)
}

// DecodeAnswerCareful refuses a blank body and reads any other with
// json.Unmarshal: the reference a one-pass answer decoder must equal.
func DecodeAnswerCareful[T any](body []byte, ans *T) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty body")
	}
	return json.Unmarshal(body, ans)
}
