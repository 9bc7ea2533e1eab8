package client_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/payworker/payworker/internal/systemtest"
)

func TestMain(m *testing.M) {
	z, err := systemtest.StartZero()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the zero-config system:", err)
		os.Exit(1)
	}
	zero, natsURL = z, z.NATSURL
	code := m.Run()
	z.Close()
	os.Exit(code)
}
