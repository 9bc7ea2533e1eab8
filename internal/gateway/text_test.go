package gateway

import (
	"encoding/json"
	"testing"
)

func TestTextUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{`"000"`, "000", false},
		{`0`, "0", false},
		{`836`, "836", false},
		{`1.50`, "1.50", false},
		{`" 94 "`, " 94 ", false},
		{`null`, "", false},
		{`true`, "", true},
		{`{}`, "", true},
	} {
		var got Text
		err := json.Unmarshal([]byte(tc.in), &got)
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("Unmarshal(%s) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if got := Text(" 000 ").Trim(); got != "000" {
		t.Errorf("Trim = %q, want 000", got)
	}
}
